import Foundation
import Glibc
import XCTest
import VFIO
@testable import Exerciser

/// The NVMe driver against the fake controller: bring-up, Identify, queues that wrap, PRPs,
/// MDTS, timeouts that end in an error rather than a hang, and an opcode allowlist that holds.
final class NVMeDriverTests: XCTestCase {
    var iommu: FakeNVMeIOMMU!
    var fake: FakeNVMe!

    override func setUp() {
        iommu = FakeNVMeIOMMU()
        fake = FakeNVMe(iommu: iommu)
    }

    override func tearDown() {
        XCTAssertEqual(fake.forbidden, [])
        XCTAssertTrue(Set(fake.adminOpcodes).isSubset(of: Set(NVMeAdminOpcode.allCases.map(\.rawValue))))
        XCTAssertTrue(Set(fake.ioOpcodes).isSubset(of: [0x02, 0x05]))
    }

    func up(timeout: Double = 0.2) throws -> NVMeController {
        try NVMeController(registers: fake, memory: iommu, commandTimeout: timeout, readyTimeout: 0.05)
    }

    func testBringUpProgramsTheControllerAndParsesIdentify() throws {
        fake.dstrd = 2
        let c = try up()
        XCTAssertEqual(fake.ccWrites.first, 0, "disabled before the admin queue is set")
        XCTAssertEqual(fake.ccWrites.last, 1 | 6 << 16 | 4 << 20)
        XCTAssertEqual(c.cap.doorbellStride, 16)
        XCTAssertEqual(c.identity.mdts, 5)
        XCTAssertTrue(c.identity.compareSupported)
        XCTAssertEqual(c.identity.namespaces, 1)
        XCTAssertEqual(c.nsid, 1)
        XCTAssertEqual(c.namespace.blockSize, 4096)
        XCTAssertEqual(c.namespace.size, 1024)
        XCTAssertEqual(c.maxTransfer, 128 << 10)
        XCTAssertEqual(c.io?.entries, 32)
        XCTAssertEqual(fake.ien[1], false, "polled: no interrupts")
        XCTAssertEqual(fake.adminOpcodes, [0x06, 0x06, 0x06, 0x09, 0x05, 0x01])
    }

    func testQueueDepthBoundedByMQES() throws {
        fake.mqes = 3
        XCTAssertEqual(try up().io?.entries, 4)
    }

    func testIdentifyFieldsFromBytes() {
        var d = [UInt8](repeating: 0, count: 4096)
        d[77] = 0
        d[516] = 3
        d[520] = 0x5
        d.withUnsafeBytes { p in
            let id = NVMeControllerIdentity(p.baseAddress!)
            XCTAssertEqual(id.namespaces, 3)
            XCTAssertTrue(id.compareSupported)
            XCTAssertEqual(id.maxTransfer(minPage: 4096, cap: 1 << 20), 1 << 20, "MDTS 0 is no limit: the cap applies")
        }
        var n = [UInt8](repeating: 0, count: 4096)
        n[0] = 0x10                       // NSZE 16
        n[26] = 0x21                      // FLBAS: format 1 | upper bits 01 → format 17
        n[128 + 4 * 17 + 2] = 9           // LBAF17 LBADS 9
        n.withUnsafeBytes { p in
            let ns = NVMeNamespaceIdentity(p.baseAddress!)
            XCTAssertEqual(ns.size, 16)
            XCTAssertEqual(ns.blockSize, 512)
            XCTAssertEqual(ns.metadataBytes, 0)
        }
    }

    func testStatusDecoding() {
        let field = UInt16(2) << 9 | UInt16(0x85) << 1 | 1  // phase set
        let s = NVMeStatus(field: field)
        XCTAssertEqual(s, .compareFailure)
        XCTAssertEqual(s.description, "SCT 2 SC 0x85 Compare Failure")
        XCTAssertEqual(NVMeCompletion(dwords: [0, 0, 3 | 1 << 16, 7 | UInt32(field) << 16]).cid, 7)
        XCTAssertTrue(NVMeCompletion(dwords: [0, 0, 0, UInt32(field) << 16]).phase)
    }

    func testPRPPagesWithOffsetAndCrossing() {
        XCTAssertEqual(prpPages(iova: 0x10000, bytes: 4096, pageSize: 4096), [0x10000])
        XCTAssertEqual(prpPages(iova: 0x10200, bytes: 4096, pageSize: 4096), [0x10200, 0x11000])
        XCTAssertEqual(prpPages(iova: 0x10000, bytes: 3 * 4096, pageSize: 4096), [0x10000, 0x11000, 0x12000])
    }

    func testNeverReadyIsAClearError() {
        fake.neverReady = true
        let t = Date()
        XCTAssertThrowsError(try up()) { e in
            XCTAssertEqual("\(e)", "nvme: CSTS.RDY did not become 1 within 0.05 s (CAP.TO)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(t), 1)
        XCTAssertEqual(fake.cc & 1, 0, "left disabled")
    }

    func testFatalStatusOnEnable() {
        fake.fatalOnEnable = true
        XCTAssertThrowsError(try up()) { XCTAssertTrue("\($0)".contains("CSTS.CFS"), "\($0)") }
    }

    func testCommandThatNeverCompletesTimesOutAndDisables() throws {
        let c = try up(timeout: 0.05)
        fake.dropIOCompletions = true
        let buf = try iommu.allocate(4096)
        let t = Date()
        XCTAssertThrowsError(try c.run([.init(opcode: .read, lba: 0, blocks: 1, iova: buf.iova)])) { e in
            XCTAssertEqual("\(e)", "nvme: command Read (cid 0) did not complete within 0.05 s")
        }
        XCTAssertLessThan(Date().timeIntervalSince(t), 1)
        XCTAssertEqual(fake.cc & 1, 0, "disabled: no DMA after the caller gives up")
        XCTAssertThrowsError(try c.run([.init(opcode: .read, lba: 0, blocks: 1, iova: buf.iova)])) {
            XCTAssertTrue("\($0)".contains("unusable"), "\($0)")
        }
    }

    /// 4-entry queues, 100 commands: the tail and the completion head wrap many times and the
    /// phase tag flips each time; every Read lands where it was sent.
    func testQueueWrapOverManyCommands() throws {
        fake.mqes = 3
        let c = try up()
        let buf = try iommu.allocate(100 * 4096)
        let ios = (0..<100).map { NVMeController.IO(opcode: .read, lba: UInt64(($0 * 7) % 1024), blocks: 1, iova: buf.iova + UInt64($0 * 4096)) }
        XCTAssertEqual(try c.run(ios), [NVMeStatus](repeating: .success, count: 100))
        for i in 0..<100 {
            XCTAssertEqual(buf.pointer.load(fromByteOffset: i * 4096, as: UInt64.self), UInt64((i * 7) % 1024), "page \(i)")
        }
        XCTAssertEqual(fake.ioCommands.count, 100)
        XCTAssertEqual(fake.maxOutstanding, 3, "a 4-entry queue holds 3 commands")
    }

    /// Completions that arrive late and newest first are matched by command id.
    func testOutOfOrderCompletions() throws {
        fake.deferCompletions = true
        fake.mqes = 7
        let c = try up()
        let buf = try iommu.allocate(40 * 4096)
        let ios = (0..<40).map { NVMeController.IO(opcode: .compare, lba: UInt64($0), blocks: 1, iova: buf.iova + UInt64($0 * 4096)) }
        memcpy(buf.pointer, fake.namespace, 40 * 4096)
        buf.pointer.storeBytes(of: 0xFF, toByteOffset: 13 * 4096 + 9, as: UInt8.self)
        let s = try c.run(ios)
        XCTAssertEqual(s.indices.filter { s[$0] != .success }, [13])
        XCTAssertEqual(s[13], .compareFailure)
        XCTAssertEqual(fake.maxOutstanding, 7)
    }

    func testPRP2AndPRPListTransfers() throws {
        let c = try up()
        let buf = try iommu.allocate(40 * 4096)
        XCTAssertEqual(try c.run([.init(opcode: .read, lba: 5, blocks: 2, iova: buf.iova),
                                  .init(opcode: .read, lba: 100, blocks: 32, iova: buf.iova + 8 * 4096)]), [.success, .success])
        XCTAssertEqual(fake.ioCommands[0].prp2, buf.iova + 4096, "two pages: PRP2 is the second page")
        XCTAssertNotEqual(fake.ioCommands[1].prp2, buf.iova + 9 * 4096, "32 pages: PRP2 points at a list")
        for (page, lba) in [(0, 5), (1, 6), (8, 100), (39, 131)] {
            XCTAssertEqual(buf.pointer.load(fromByteOffset: page * 4096, as: UInt64.self), UInt64(lba))
        }
    }

    func testTransferOverMDTSIsRefusedByDriverAndFake() throws {
        let c = try up()
        let buf = try iommu.allocate(64 * 4096)
        XCTAssertThrowsError(try c.run([.init(opcode: .read, lba: 0, blocks: 33, iova: buf.iova)]))
        fake.mdts = 4  // the model enforces its limit too: a split that ignores MDTS fails
        XCTAssertEqual(try c.run([.init(opcode: .read, lba: 0, blocks: 32, iova: buf.iova)]), [FakeNVMe.invalidField])
    }

    func testCompareFailureOnOneByte() throws {
        let c = try up()
        let buf = try iommu.allocate(8192)
        memcpy(buf.pointer, fake.namespace, 8192)
        XCTAssertEqual(try c.run([.init(opcode: .compare, lba: 0, blocks: 2, iova: buf.iova)]), [.success])
        buf.pointer.storeBytes(of: buf.pointer.load(fromByteOffset: 5000, as: UInt8.self) ^ 1, toByteOffset: 5000, as: UInt8.self)
        XCTAssertEqual(try c.run([.init(opcode: .compare, lba: 0, blocks: 2, iova: buf.iova)]), [.compareFailure])
    }

    func testAllowlistRefusesEverythingThatWrites() {
        for op: UInt8 in [0x01, 0x08, 0x04, 0x09, 0x0C, 0x0D, 0x11, 0x19] {  // write, write zeroes, ..., copy
            XCTAssertThrowsError(try NVMeAllowlist.check(NVMeCommand(opcode: op), admin: false), "I/O 0x\(String(op, radix: 16))")
        }
        for op: UInt8 in [0x80, 0x84, 0x0D, 0x10, 0x11, 0x15, 0x7C, 0x02, 0x0C] {  // format, sanitize, ns mgmt, fw, ...
            XCTAssertThrowsError(try NVMeAllowlist.check(NVMeCommand(opcode: op), admin: true), "admin 0x\(String(op, radix: 16))")
        }
        XCTAssertThrowsError(try NVMeAllowlist.check(NVMeCommand(opcode: 0x09, cdw10: 0x06), admin: true), "Set Features: volatile write cache")
        XCTAssertThrowsError(try NVMeAllowlist.check(NVMeCommand(opcode: 0x02, fuse: 1), admin: false))
        XCTAssertNoThrow(try NVMeAllowlist.check(NVMeCommand(opcode: 0x02), admin: false))
        XCTAssertNoThrow(try NVMeAllowlist.check(NVMeCommand(opcode: 0x05), admin: false))
        XCTAssertNoThrow(try NVMeAllowlist.check(NVMeCommand(opcode: 0x09, cdw10: 0x07), admin: true))
    }

    /// The fake's own guard works: a Write slipped into the I/O queue is reported.
    func testFakeReportsAForbiddenOpcode() throws {
        let c = try up()
        var seen: [String] = []
        fake.onForbidden = { seen.append($0) }
        let q = c.io!
        NVMeCommand(opcode: 0x01, nsid: 1).store(to: q.sq.pointer + q.tail * 64)
        fake.write32(NVMeReg.sqTail(1, stride: c.cap.doorbellStride), UInt32(q.tail + 1))
        XCTAssertEqual(seen, ["fake NVMe received forbidden I/O opcode 0x01"])
        fake.forbidden = []  // seen on purpose
        fake.ioOpcodes = []
    }

    func testShutdownDeletesQueuesThenDisables() throws {
        let c = try up()
        XCTAssertEqual(c.shutdown(), [])
        XCTAssertEqual(Array(fake.adminOpcodes.suffix(2)), [0x00, 0x04])
        XCTAssertEqual(fake.cc & 1, 0)
        XCTAssertEqual(fake.csts & 1, 0)
    }
}
