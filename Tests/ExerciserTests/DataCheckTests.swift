import Foundation
import Glibc
import XCTest
import VFIO
@testable import Exerciser

/// The data check's schedules against fake engines behind a fake IOMMU: the bytes must arrive
/// where the check expects them, several engines must share each round, and a device, an
/// address or a page that goes wrong must fail the check.
final class DataCheckTests: XCTestCase {
    /// IOVA → host memory, and a log of rounds (a round starts when nothing is in flight).
    final class FakeIOMMU {
        var windows: [(iova: UInt64, base: UnsafeMutableRawPointer, length: Int)] = []
        var inFlight = 0
        var rounds = 0
        var transfers: [(engine: Int, transfer: Transfer)] = []

        func map(_ iova: UInt64, _ m: MappedMemory) { windows.append((iova, m.base, m.length)) }

        func host(_ iova: UInt64, _ count: Int) throws -> UnsafeMutableRawPointer {
            for w in windows where iova >= w.iova && iova + UInt64(count) <= w.iova + UInt64(w.length) {
                return w.base + Int(iova - w.iova)
            }
            throw DMAError(description: "IOMMU fault at 0x\(String(iova, radix: 16))")
        }
    }

    /// Copies when the transfer finishes, as edu does when its timer fires: a schedule that
    /// touches a page before the round that reads it is over gets caught.
    final class FakeEngine: DMADriver {
        let name: String
        let bufferSize = 4095
        let id: Int
        let iommu: FakeIOMMU
        var buffer = [UInt8](repeating: 0, count: 4096)
        var pending: Transfer?
        /// A faulty device: flips this byte of everything it writes.
        var corruptWrites: Int?

        init(_ id: Int, _ iommu: FakeIOMMU) {
            self.id = id
            self.iommu = iommu
            name = "fake\(id)"
        }

        func start(_ transfer: Transfer) throws {
            guard pending == nil else { throw DMAError(description: "\(name) busy") }
            if iommu.inFlight == 0 { iommu.rounds += 1 }
            iommu.inFlight += 1
            iommu.transfers.append((id, transfer))
            pending = transfer
        }

        func finish() throws {
            guard let t = pending else { return }
            pending = nil
            iommu.inFlight -= 1
            switch t {
            case .read(let iova, let n):
                let p = try iommu.host(iova, n)
                buffer.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: p, byteCount: n) }
            case .write(let iova, let n):
                let p = try iommu.host(iova, n)
                var out = Array(buffer[0..<n])
                if let i = corruptWrites { out[i] ^= 0xFF }
                out.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: n) }
            }
        }
    }

    struct Setup {
        let iommu = FakeIOMMU()
        var engines: [FakeEngine] = []
        let scratch: MappedMemory
        let region: Region
        let regionIOVA: UInt64 = 0x10_0000_0000
        let scratchIOVA: UInt64 = 0x20_0000_0000
    }

    func make(engines n: Int, pages: Int = 16, scratchPages: Int? = nil, access: DataAccess = .readWrite, fill: UInt8? = nil) throws -> Setup {
        let page = PageSize.base
        let rw = PROT_READ | PROT_WRITE, anon = MAP_PRIVATE | MAP_ANONYMOUS
        let mem = try MappedMemory.map(length: pages * page, prot: rw, flags: anon)
        if let fill { memset(mem.base, Int32(fill), mem.length) }
        let scratch = try MappedMemory.map(length: (scratchPages ?? n) * page, prot: rw, flags: anon)
        let region = Region(vaddr: mem.address, size: UInt64(mem.length), access: access, initialFill: fill, keep: [mem])
        var s = Setup(scratch: scratch, region: region)
        s.iommu.map(s.regionIOVA, mem)
        s.iommu.map(s.scratchIOVA, scratch)
        s.engines = (0..<n).map { FakeEngine($0, s.iommu) }
        addTeardownBlock { _ = region.release(); scratch.unmap() }
        return s
    }

    func check(_ s: Setup, flags: DMAFlags = .readWrite, wrong: UInt64? = nil) -> [Check] {
        var c = DataCheck(engines: s.engines, scratch: s.scratch, scratchIOVA: s.scratchIOVA, seed: 7)
        c.wrongIOVA = wrong
        return c.run(region: s.region, iova: s.regionIOVA, flags: flags).checks
    }

    func testRingOnThreeEnginesIsTwoRounds() throws {
        let s = try make(engines: 3)
        let checks = check(s)
        XCTAssertEqual(checks.map(\.name), ["data-ring"])
        XCTAssertTrue(checks.allSatisfy(\.passed), "\(checks)")
        XCTAssertEqual(s.iommu.rounds, 2)
        XCTAssertEqual(s.iommu.transfers.count, 6)
        XCTAssertEqual(Set(s.iommu.transfers.map(\.engine)), [0, 1, 2])
        XCTAssertTrue(checks[0].detail.contains("by 3 engines"), checks[0].detail)
        // Every page is read once and written once.
        let pages = [0, 8, 15].map { s.regionIOVA + UInt64($0 * PageSize.base) }
        let reads = s.iommu.transfers.compactMap { if case .read(let a, _) = $0.transfer { return a } else { return nil } }
        let writes = s.iommu.transfers.compactMap { if case .write(let a, _) = $0.transfer { return a } else { return nil } }
        XCTAssertEqual(Set(reads), Set(pages))
        XCTAssertEqual(Set(writes), Set(pages))
    }

    func testRingOnOneEngineIsSequential() throws {
        let s = try make(engines: 1)
        let checks = check(s)
        XCTAssertTrue(checks.allSatisfy(\.passed), "\(checks)")
        XCTAssertEqual(s.iommu.rounds, 6)
        XCTAssertFalse(checks[0].detail.contains("engines"), checks[0].detail)
    }

    func testTwoEnginesForThreePagesStaySequential() throws {
        let s = try make(engines: 2)
        XCTAssertTrue(check(s).allSatisfy(\.passed))
        XCTAssertEqual(Set(s.iommu.transfers.map(\.engine)), [0])
    }

    func testOneScratchPageLimitsToOneEngine() throws {
        let s = try make(engines: 3, scratchPages: 1)
        XCTAssertTrue(check(s).allSatisfy(\.passed))
        XCTAssertEqual(s.iommu.rounds, 6)
    }

    func testFaultyHelperFailsTheRing() throws {
        let s = try make(engines: 3)
        s.engines[2].corruptWrites = 100
        let checks = check(s)
        XCTAssertEqual(checks.count, 1)
        XCTAssertFalse(checks[0].passed)
        // Engine 2 reads the last page (+0xf000) and writes the first.
        XCTAssertTrue(checks[0].detail.contains("read of page +0xf000 or write of page +0x0"), checks[0].detail)
        XCTAssertTrue(checks[0].detail.contains("byte 100"), checks[0].detail)
    }

    func testWrongIOVAFails() throws {
        for n in [1, 3] {
            let s = try make(engines: n)
            let checks = check(s, wrong: s.scratchIOVA)
            XCTAssertFalse(checks.isEmpty)
            XCTAssertFalse(checks.allSatisfy(\.passed), "\(n) engine(s): a check aimed at the scratch page passed")
        }
    }

    func testReadOnlyRegionReadsThroughOwnScratchPages() throws {
        let s = try make(engines: 3, access: .readOnly, fill: 0x3C)
        let checks = check(s, flags: .read)
        XCTAssertEqual(checks.map(\.name), ["data-read"])
        XCTAssertTrue(checks.allSatisfy(\.passed), "\(checks)")
        XCTAssertEqual(s.iommu.rounds, 2)
        let scratchWrites = s.iommu.transfers.compactMap { if case .write(let a, _) = $0.transfer { return a } else { return nil } }
        XCTAssertEqual(Set(scratchWrites).count, 3, "each engine writes back through its own scratch page")
    }

    func testReadOnlyMismatchIsCaught() throws {
        let s = try make(engines: 3, access: .readOnly, fill: 0x3C)
        // The region holds something other than what the check was told.
        s.region.pointer.storeBytes(of: 0x3D, toByteOffset: 8 * PageSize.base + 5, as: UInt8.self)
        let checks = check(s, flags: .read)
        XCTAssertFalse(checks.allSatisfy(\.passed))
        XCTAssertTrue(checks[0].detail.contains("page +0x8000"), checks[0].detail)
    }

    func testWriteOnlyMappingIsTwoRounds() throws {
        let s = try make(engines: 3)
        let checks = check(s, flags: .write)
        XCTAssertEqual(checks.map(\.name), ["data-write"])
        XCTAssertTrue(checks.allSatisfy(\.passed), "\(checks)")
        XCTAssertEqual(s.iommu.rounds, 2)
    }

    func testSinglePageRegion() throws {
        let s = try make(engines: 3, pages: 1)
        let checks = check(s)
        XCTAssertTrue(checks.allSatisfy(\.passed), "\(checks)")
        XCTAssertEqual(s.iommu.transfers.count, 2)
    }

    /// An engine whose start fails still lets the others finish before the error surfaces.
    func testRoundWaitsForStartedTransfersWhenOneFails() throws {
        let s = try make(engines: 2)
        s.engines[1].pending = .read(from: 0, count: 1)  // busy
        XCTAssertThrowsError(try dmaRound([(s.engines[0], .read(from: s.regionIOVA, count: 16)), (s.engines[1], .read(from: s.regionIOVA, count: 16))]))
        XCTAssertNil(s.engines[0].pending, "the started transfer was waited for")
    }
}
