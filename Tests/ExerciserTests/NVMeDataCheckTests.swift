import Foundation
import Glibc
import XCTest
import VFIO
@testable import Exerciser

/// The NVMe data check against the fake controller behind a fake IOMMU whose windows carry the
/// mapping's DMA flags: every page must be proven, a misdirected command must fail the check,
/// and what cannot be checked must be said, not passed.
final class NVMeDataCheckTests: XCTestCase {
    var iommu: FakeNVMeIOMMU!
    var fake: FakeNVMe!
    let regionIOVA: UInt64 = 0x10_0000_0000
    var bringUpIO = 0

    override func tearDown() {
        XCTAssertEqual(fake.forbidden, [])
        XCTAssertTrue(Set(fake.ioOpcodes).isSubset(of: [0x02, 0x05]), "only Read and Compare")
    }

    func engine(namespaceBytes: Int = 4 << 20, image: [UInt8]? = nil, window: Int = NVMeEngine.windowCap,
                configure: (FakeNVMe) -> Void = { _ in }) throws -> NVMeEngine {
        iommu = FakeNVMeIOMMU()
        fake = FakeNVMe(iommu: iommu, namespaceBytes: namespaceBytes, image: image)
        configure(fake)
        let c = try NVMeController(registers: fake, memory: iommu, commandTimeout: 0.5, readyTimeout: 0.05)
        let e = try NVMeEngine(controller: c, memory: iommu, window: window)
        bringUpIO = fake.ioCommands.count
        return e
    }

    func region(pages: Int, access: DataAccess = .readWrite, fill: UInt8? = nil, flags: DMAFlags = .readWrite) throws -> Region {
        let m = try MappedMemory.map(length: pages * 4096, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS)
        if let fill { memset(m.base, Int32(fill), m.length) }
        iommu.map(regionIOVA, m.base, m.length, flags)
        let r = Region(vaddr: m.address, size: UInt64(m.length), access: access, initialFill: fill, keep: [m])
        addTeardownBlock { _ = r.release() }
        return r
    }

    /// I/O commands the check issued against the region (not the reference load).
    var regionCommands: [NVMeCommand] { Array(fake.ioCommands.dropFirst(bringUpIO)) }

    func testGoodMappingPassesBothDirectionsOnEveryPage() throws {
        let e = try engine()
        let r = try region(pages: 16)
        let res = NVMeCheck(engine: e, seed: 3).run(region: r, iova: regionIOVA, flags: .readWrite)
        XCTAssertEqual(res.summary, "ok (nvme, 65536 bytes, both directions)")
        XCTAssertEqual(res.checks.map(\.name), ["data-nvme-read", "data-nvme-compare", "data-nvme-compare-fails"])
        XCTAssertTrue(res.checks.allSatisfy(\.passed), "\(res.checks)")
        XCTAssertEqual(iommu.faults, [])
        // Every page holds the 4 KiB block the map says: window page (start + i) mod window.
        let start = (3 * 97 + 13) % e.windowUnits
        for i in 0..<16 { XCTAssertEqual(r.pointer.load(fromByteOffset: i * 4096, as: UInt64.self), UInt64(start + i), "page \(i)") }
        XCTAssertTrue(res.checks[0].detail.contains("IOVA 0x1000000000-0x100000ffff"), res.checks[0].detail)
    }

    /// 2 MiB region, MDTS 128 KiB: 16 Reads and 16 Compares, none over the limit the fake enforces.
    func testMDTSSplitsA2MiBRegionInto16Commands() throws {
        let e = try engine(namespaceBytes: 8 << 20)
        let r = try region(pages: 512)
        let res = NVMeCheck(engine: e, seed: 0).run(region: r, iova: regionIOVA, flags: .readWrite)
        XCTAssertEqual(res.summary, "ok (nvme, 2097152 bytes, both directions)", "\(res.checks)")
        let cmds = regionCommands
        XCTAssertEqual(cmds.filter { $0.opcode == 0x02 }.count, 16 + 1, "16 Reads, plus one where the window wraps")
        XCTAssertTrue(cmds.allSatisfy { $0.cdw12 + 1 <= 32 }, "no command over 128 KiB")
    }

    func testWindowWrapIsSaidAndStillPasses() throws {
        let e = try engine(window: 64 << 10)
        let r = try region(pages: 40)
        let res = NVMeCheck(engine: e, seed: 1).run(region: r, iova: regionIOVA, flags: .readWrite)
        XCTAssertEqual(res.summary, "ok (nvme, 163840 bytes, both directions)", "\(res.checks)")
        XCTAssertTrue(res.checks[0].detail.contains("wrapping at the 16-page window"), res.checks[0].detail)
    }

    func testOneCommandAtTheWrongIOVAFailsBothDirections() throws {
        let e = try engine()
        let r = try region(pages: 16)
        var c = NVMeCheck(engine: e, seed: 3)
        c.wrongIOVA = e.decoy.iova
        let res = c.run(region: r, iova: regionIOVA, flags: .readWrite)
        XCTAssertTrue(res.summary.hasPrefix("mismatch (nvme: data-nvme-read, data-nvme-compare"), res.summary)
        XCTAssertTrue(res.checks[0].detail.contains("page +0x0 at IOVA 0x1000000000 still holds its poison"), res.checks[0].detail)
    }

    func testWrongIOVAFailsTheDeviceReadOnlyCheckToo() throws {
        let e = try engine()
        let r = try region(pages: 8, flags: .read)
        var c = NVMeCheck(engine: e, seed: 5)
        c.wrongIOVA = e.decoy.iova
        let res = c.run(region: r, iova: regionIOVA, flags: .read)
        XCTAssertEqual(res.checks.first { $0.name == "data-nvme-compare" }?.passed, false, "\(res.checks)")
    }

    func testSwappedPRPEntriesFailTheCheck() throws {
        let e = try engine()
        let r = try region(pages: 16)
        var c = NVMeCheck(engine: e, seed: 3)
        c.swapPRP = true
        let res = c.run(region: r, iova: regionIOVA, flags: .readWrite)
        XCTAssertFalse(res.checks[0].passed)
        XCTAssertTrue(res.checks[0].detail.hasPrefix("2 of 16 pages differ"), res.checks[0].detail)
        XCTAssertFalse(res.checks[1].passed, "Compare sees the swap too")
    }

    /// Write-only mapping: the device may not read it (the fake IOMMU faults if it does).
    func testWriteOnlyMappingIsCheckedByReadsOnly() throws {
        let e = try engine()
        let r = try region(pages: 8, flags: .write)
        let res = NVMeCheck(engine: e, seed: 2).run(region: r, iova: regionIOVA, flags: .write)
        XCTAssertEqual(res.summary, "ok (nvme, 32768 bytes, device writes)")
        XCTAssertFalse(regionCommands.contains { $0.opcode == 0x05 })
        XCTAssertEqual(iommu.faults, [])
    }

    /// Read-only mapping of writable memory: the device may not write it.
    func testReadOnlyMappingIsCheckedByCompareOnly() throws {
        let e = try engine()
        let r = try region(pages: 8, flags: .read)
        let res = NVMeCheck(engine: e, seed: 2).run(region: r, iova: regionIOVA, flags: .read)
        XCTAssertEqual(res.summary, "ok (nvme, 32768 bytes, device reads)")
        XCTAssertEqual(res.checks.map(\.name), ["data-nvme-compare", "data-nvme-compare-fails"])
        XCTAssertFalse(regionCommands.contains { $0.opcode == 0x02 })
        XCTAssertEqual(iommu.faults, [])
    }

    /// Read-only memory holding 0x3C, and a namespace with no such page: said, not passed.
    func testReadOnlyMemoryOfKnownFillWithoutAMatchingPageIsNotCheckable() throws {
        let e = try engine()
        let r = try region(pages: 4, access: .readOnly, fill: 0x3C, flags: .read)
        let res = NVMeCheck(engine: e, seed: 2).run(region: r, iova: regionIOVA, flags: .read)
        XCTAssertEqual(res.checks, [])
        XCTAssertEqual(res.summary, "not checkable: device reads: the memory holds 0x3c and no page of the namespace window does: not checkable against the namespace")
    }

    /// The same memory against a namespace that has a page of 0x3C: every page compared with it.
    func testReadOnlyMemoryComparedWithAFilledNamespacePage() throws {
        var image = FakeNVMe.image(bytes: 4 << 20)
        for i in 0..<4096 { image[7 * 4096 + i] = 0x3C }
        let e = try engine(image: image)
        let r = try region(pages: 4, access: .readOnly, fill: 0x3C, flags: .read)
        let res = NVMeCheck(engine: e, seed: 2).run(region: r, iova: regionIOVA, flags: .read)
        XCTAssertEqual(res.summary, "ok (nvme, 16384 bytes, device reads)", "\(res.checks)")
        // A page that is not 0x3C is caught.
        let w = try MappedMemory.map(length: 4 * 4096, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS)
        memset(w.base, 0x3C, w.length)
        w.base.storeBytes(of: 0x3D, toByteOffset: 2 * 4096 + 17, as: UInt8.self)
        iommu.windows.removeAll { $0.iova == regionIOVA }
        iommu.map(regionIOVA, w.base, w.length, .read)
        let bad = Region(vaddr: w.address, size: UInt64(w.length), access: .readOnly, initialFill: 0x3C, keep: [w])
        let res2 = NVMeCheck(engine: e, seed: 2).run(region: bad, iova: regionIOVA, flags: .read)
        XCTAssertEqual(res2.checks.first?.passed, false)
        XCTAssertTrue(res2.checks.first?.detail.contains("page +0x2000") ?? false, "\(res2.checks)")
    }

    /// Untouched anon (zero page) mapped for device reads: the CPU must not write it.
    func testZeroFilledMemoryForDeviceReadsIsNotWrittenByTheCPU() throws {
        let e = try engine()
        let r = try region(pages: 4, access: .readWrite, fill: 0, flags: .read)
        _ = NVMeCheck(engine: e, seed: 2).run(region: r, iova: regionIOVA, flags: .read)
        for i in stride(from: 0, to: 4 * 4096, by: 8) { XCTAssertEqual(r.pointer.load(fromByteOffset: i, as: UInt64.self), 0) }
    }

    func testCompareUnsupportedChecksDeviceWritesOnlyAndSaysSo() throws {
        let e = try engine { $0.oncs = 0 }
        let r = try region(pages: 8)
        let res = NVMeCheck(engine: e, seed: 4).runWithNotes(region: r, iova: regionIOVA, flags: .readWrite)
        XCTAssertEqual(res.summary, "ok (nvme, 32768 bytes, device writes)")
        XCTAssertEqual(res.notes, ["device reads: not checked, the controller lacks Compare (ONCS bit 0)"])
        XCTAssertFalse(fake.ioOpcodes.contains(0x05))
        let ro = NVMeCheck(engine: e, seed: 4).run(region: r, iova: regionIOVA, flags: .read)
        XCTAssertEqual(ro.summary, "not checkable: device reads: not checked, the controller lacks Compare (ONCS bit 0)")
    }

    /// A device whose Compare never fails is caught by the flipped-byte proof.
    func testCompareThatCannotFailIsCaught() throws {
        let e = try engine { $0.compareAlwaysSucceeds = true }
        let r = try region(pages: 8)
        let res = NVMeCheck(engine: e, seed: 4).run(region: r, iova: regionIOVA, flags: .readWrite)
        XCTAssertEqual(res.summary, "mismatch (nvme: data-nvme-compare-fails)")
        XCTAssertTrue(res.checks[2].detail.contains("Compare reported SCT 0 SC 0x00"), res.checks[2].detail)
    }

    /// A Compare Failure on a good-looking mapping: memory that changed under the device.
    func testCompareFailureIsReportedWithThePages() throws {
        let e = try engine()
        let r = try region(pages: 8, flags: .read)
        fake.compareAlwaysSucceeds = false
        // The mapping is read-only for the device; break one page after the CPU fills it by
        // aiming the IOMMU window for page 5 at other memory.
        let other = try MappedMemory.map(length: 4096, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS)
        iommu.windows.insert(.init(iova: regionIOVA + 5 * 4096, base: other.base, length: 4096, flags: .read), at: 0)
        let res = NVMeCheck(engine: e, seed: 0).run(region: r, iova: regionIOVA, flags: .read)
        XCTAssertEqual(res.checks[0].passed, false)
        XCTAssertTrue(res.checks[0].detail.contains("SCT 2 SC 0x85 Compare Failure"), res.checks[0].detail)
        withExtendedLifetime(other) {}
    }

    func testMMIOAndPrefixRegions() throws {
        let e = try engine()
        let none = Region(vaddr: 0x1000, size: 4096, access: .none("device MMIO"))
        XCTAssertEqual(NVMeCheck(engine: e, seed: 0).run(region: none, iova: regionIOVA, flags: .readWrite).summary, "not checkable: device MMIO")
        let m = try MappedMemory.map(length: 8 * 4096, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS)
        iommu.map(regionIOVA, m.base, 3 * 4096)
        let prefix = Region(vaddr: m.address, size: 8 * 4096, access: .prefixOnly(3 * 4096), keep: [m])
        XCTAssertEqual(NVMeCheck(engine: e, seed: 0).run(region: prefix, iova: regionIOVA, flags: .readWrite).summary, "ok (nvme, 12288 bytes, both directions)")
    }

    /// A Read that leaves one 512-byte sector of a page unwritten: the sector keeps its poison
    /// tag, even where the memory held zeros before and the namespace block is zeros too.
    func testAMissingSectorIsCaught() throws {
        let e = try engine()
        fake.readsSkipSector = 3
        let r = try region(pages: 16)
        memset(r.pointer, 0, 16 * 4096)
        let res = NVMeCheck(engine: e, seed: 3).run(region: r, iova: regionIOVA, flags: .readWrite)
        XCTAssertTrue(res.summary.hasPrefix("mismatch"), res.summary)
        XCTAssertFalse(res.checks.first { $0.name == "data-nvme-read" }?.passed ?? true)
    }

    func testAReadThatMovesNothingIsCaughtAtReferenceLoad() throws {
        iommu = FakeNVMeIOMMU()
        fake = FakeNVMe(iommu: iommu)
        let c = try NVMeController(registers: fake, memory: iommu, commandTimeout: 0.5, readyTimeout: 0.05)
        fake.readsMoveNothing = true
        XCTAssertThrowsError(try NVMeEngine(controller: c, memory: iommu)) { XCTAssertTrue("\($0)".contains("still holds its poison"), "\($0)") }
    }
}
