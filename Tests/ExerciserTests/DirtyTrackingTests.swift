import Foundation
import XCTest
import Yams
import SystemPackage
import CVFIO
@testable import VFIO
@testable import Exerciser

/// Dirty tracking (issue 13 item 10): the bitmap's layout and size rules, the order of the
/// dirty-pages and hwpt-dirty steps, and the judging of what each kind of tracker reports
/// against configs/events.yaml, with a fake that follows vfio_iommu_type1.c, vfio_compat.c and
/// iommufd's HWPT rules.
final class DirtyTrackingTests: XCTestCase {
    func config() throws -> EventConfig { try EventConfig.load(EventTests.repoConfigs + "/events.yaml") }

    func record(_ kind: CaseKind, _ e: CaseEvent, _ backend: BackendKind, _ r: EventResult) -> CaseRecord {
        var c = Runner.record(PlannedCase(backend: backend, phase: .device, kind: kind, instance: nil, size: 16384,
                                          flags: kind.defaultFlags, event: e), iova: 0, outcome: r.mapOutcome)
        c.observations = r.observations
        c.checks = r.checks
        return c
    }

    func run(_ e: CaseEvent, _ t: FakeEventKernel.Tracker, pages: Int = 4, drop: Bool = false) -> (FakeEventKernel, EventResult) {
        let k = FakeEventKernel(pages: pages, memory: .privateAnon)
        k.tracker = t
        k.dropsLastDirtyPage = drop
        return (k, EventExecutor.run(e, world: k))
    }

    // MARK: the bitmap

    func testBitmapSizeIsWholeU64Words() {
        XCTAssertEqual(DirtyBitmap.bytes(pages: 1), 8)
        XCTAssertEqual(DirtyBitmap.bytes(pages: 64), 8)
        XCTAssertEqual(DirtyBitmap.bytes(pages: 65), 16)
        XCTAssertEqual(DirtyBitmap.bytes(pages: 512), 64)
        // type1's DIRTY_BITMAP_SIZE_MAX, what its migration capability reports.
        XCTAssertEqual(DirtyBitmap.bytes(pages: Int(Int32.max)), 268_435_456)
        XCTAssertEqual(DirtyBitmap(pgsize: 4096, pages: 65).words.count, 2)
    }

    /// Bit i is bit i % 8 of byte i / 8 in the buffer the kernel fills (LE u64 words).
    func testBitOrderMatchesTheKernelsBytes() {
        let (rc, bm) = DirtyBitmap.withBuffer(pgsize: 4096, pages: 70) { FakeType1Bitmap.copyOut(bits: [0, 9, 63, 64, 69], pages: 70, to: $0, size: Int($1)) }
        XCTAssertEqual(rc, 0)
        XCTAssertEqual(bm.setPages, [0, 9, 63, 64, 69])
        XCTAssertEqual(bm.words, [1 | 1 << 9 | 1 << 63, 1 | 1 << 5])
        let raw = FakeType1Bitmap.write(bits: [9], pages: 16)
        XCTAssertEqual(raw[1], 0b10, "page 9: second byte, bit 1")
        XCTAssertFalse(bm.overrun)
        XCTAssertEqual(bm.strayBits, 0)
    }

    /// The buffer the tool hands over is exactly DIRTY_BITMAP_BYTES: the kernel's size check
    /// accepts it, a smaller one is refused, and a write past it is caught by the guard words.
    func testBufferSizeRulesAndOverrun() {
        let (rc, _) = DirtyBitmap.withBuffer(pgsize: 4096, pages: 130) { data, size -> Int32 in
            XCTAssertEqual(size, 24)
            XCTAssertEqual(FakeType1Bitmap.copyOut(bits: [], pages: 130, to: data, size: Int(size) - 8), EINVAL, "one word short")
            return FakeType1Bitmap.copyOut(bits: [129], pages: 130, to: data, size: Int(size))
        }
        XCTAssertEqual(rc, 0)
        XCTAssertFalse(FakeType1Bitmap.verify(pages: 0, size: 8), "no pages")
        XCTAssertFalse(FakeType1Bitmap.verify(pages: 1, size: 0), "no buffer")
        let (_, over) = DirtyBitmap.withBuffer(pgsize: 4096, pages: 64) { data, _ in (data + 1).pointee = 1 }
        XCTAssertTrue(over.overrun)
        XCTAssertEqual(over.classify(written: []), "other")
    }

    func testClassification() {
        var bm = DirtyBitmap(pgsize: 4096, pages: 7)
        XCTAssertEqual(bm.classify(written: [0, 3, 6]), "none")
        for i in [0, 3, 6] { bm.set(i) }
        XCTAssertEqual(bm.classify(written: [0, 3, 6]), "written")
        XCTAssertEqual(bm.classify(written: [0, 3]), "other", "a page set that was not written")
        for i in 0..<7 { bm.set(i) }
        XCTAssertEqual(bm.classify(written: [0, 3, 6]), "all")
        bm.words[0] |= 1 << 7
        XCTAssertEqual(bm.strayBits, 1)
        XCTAssertEqual(bm.classify(written: [0, 3, 6]), "other", "a bit past the range")
        XCTAssertEqual(EventPlan.dirtySubset(pages: 7), [0, 3, 6])
        XCTAssertEqual(EventPlan.dirtySubset(pages: 8), [0, 3, 6, 7])
    }

    func testMigrationCapabilityIsParsedFromTheChain() {
        // vfio_iommu_type1_info, then the migration cap at cap_offset with no next.
        let head = MemoryLayout<vfio_iommu_type1_info>.size
        let cap = MemoryLayout<vfio_iommu_type1_info_cap_migration>.self
        var buf = [UInt8](repeating: 0, count: head + cap.size)
        func put<T>(_ v: T, _ o: Int) { withUnsafeBytes(of: v) { for (i, b) in $0.enumerated() { buf[o + i] = b } } }
        put(UInt32(buf.count), 0)
        put(UInt32(VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS), MemoryLayout<vfio_iommu_type1_info>.offset(of: \.flags)!)
        put(UInt64(0x40201000), MemoryLayout<vfio_iommu_type1_info>.offset(of: \.iova_pgsizes)!)
        put(UInt32(head), MemoryLayout<vfio_iommu_type1_info>.offset(of: \.cap_offset)!)
        put(UInt16(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION), head)
        put(UInt16(1), head + 2)
        put(UInt64(4096), head + cap.offset(of: \.pgsize_bitmap)!)
        put(UInt64(268_435_456), head + cap.offset(of: \.max_dirty_bitmap_size)!)
        let info = IOMMUInfo.parse(buf)
        XCTAssertEqual(info.migration, MigrationCap(flags: 0, pgsizeBitmap: 4096, maxDirtyBitmapSize: 268_435_456))
        XCTAssertNil(IOMMUInfo.parse(Array(buf.prefix(head))).migration, "a chain cut short has no capability")
    }

    // MARK: sequencing

    func testDirtyPagesOrder() {
        let s = EventPlan.steps(for: .dirtyPages)
        let i = { (x: EventStep) in s.firstIndex(of: x)! }
        XCTAssertLessThan(i(.untrackedUnmap("untracked_unmap")), i(.apply), "the flag without tracking, before START")
        XCTAssertLessThan(i(.apply), i(.deviceWriteSome(.device)))
        XCTAssertLessThan(i(.deviceWriteSome(.device)), i(.dirtyBitmap("dirty_bitmap")))
        XCTAssertLessThan(i(.dirtyBitmap("dirty_bitmap")), i(.dirtyUnmap("unmap_bitmap")))
        XCTAssertLessThan(i(.dirtyUnmap("unmap_bitmap")), i(.dirtyStop), "the unmap's bitmap needs tracking on")
        XCTAssertEqual(Set(CaseEvent.dirtyPages.observations), ["migration_cap", "untracked_unmap", "event", "dirty_bitmap", "unmap_bitmap"])
        XCTAssertEqual(Set(CaseEvent.hwptDirty.observations), ["hw_dirty_cap", "event", "dirty_bitmap"])
    }

    /// A tracked unmap takes the mapping with it: no second unmap; STOP still runs.
    func testATrackedUnmapIsTheUnmap() {
        let (k, r) = run(.dirtyPages, .type1(v2: true))
        XCTAssertEqual(Array(k.log.suffix(3)), ["dirtyBitmap", "unmapGettingDirty", "dirtyStop"], "\(k.log)")
        XCTAssertFalse(k.log.contains("unmap"))
        XCTAssertTrue(r.checks.allSatisfy(\.passed), "\(r.checks)")
    }

    /// A kernel that accepted the flag untracked unmapped the range: nothing after runs against it.
    func testAnUntrackedUnmapThatWorksEndsTheCase() throws {
        let k = FakeEventKernel(memory: .privateAnon)
        k.acceptsUntrackedUnmap = true
        let r = EventExecutor.run(.dirtyPages, world: k)
        XCTAssertEqual(r.observations["untracked_unmap"], "ok")
        XCTAssertFalse(k.log.contains("apply") || k.log.contains("unmap"), "\(k.log)")
        XCTAssertEqual(try config().judge(record(.anonPrivate, .dirtyPages, .type1v2, r), kernel: KernelVersion(6, 12)).kind, .fail)
    }

    // MARK: each tracker judged against configs/events.yaml

    func testEachTrackerPassesItsRow() throws {
        let cfg = try config()
        let cases: [(FakeEventKernel.Tracker, CaseEvent, BackendKind, [String: String])] = [
            (.type1(v2: true), .dirtyPages, .type1v2, ["event": "ok", "dirty_bitmap": "all", "unmap_bitmap": "all", "untracked_unmap": "EINVAL"]),
            (.type1(v2: false), .dirtyPages, .type1, ["event": "EACCES", "dirty_bitmap": "EACCES", "unmap_bitmap": "EINVAL"]),
            (.compat, .dirtyPages, .iommufdCompatType1v2, ["event": "ENOTTY", "dirty_bitmap": "ENOTTY", "migration_cap": "absent"]),
            (.compat, .dirtyPages, .iommufdCompatType1, ["event": "ENOTTY", "unmap_bitmap": "EINVAL"]),
            (.hwpt(ssads: false), .hwptDirty, .iommufd, ["event": "EOPNOTSUPP", "dirty_bitmap": "not-run", "hw_dirty_cap": "absent"]),
        ]
        for (t, e, b, want) in cases {
            let (_, r) = run(e, t)
            for (k, v) in want { XCTAssertEqual(r.observations[k], v, "\(t) \(k)") }
            for kernel in [KernelVersion(6, 1), KernelVersion(7, 3)] {
                let v = cfg.judge(record(.anonPrivate, e, b, r), kernel: kernel)
                XCTAssertEqual(v.kind, .pass, "\(t) on \(kernel): \(v.reason)")
            }
        }
    }

    /// type1 reports a vfio-pci device's whole mapping, over many words too.
    func testAllOverEightWords() {
        let (_, r) = run(.dirtyPages, .type1(v2: true), pages: 512)
        XCTAssertEqual(r.observations["dirty_bitmap"], "all")
        XCTAssertEqual(r.observations["unmap_bitmap"], "all")
    }

    /// A container whose groups all pin through vfio_pin_pages is reported precisely, and the
    /// pages still pinned after GET_BITMAP are marked again for the unmap. That is the mdev-pin
    /// row; the NVMe container's row (all) does not fit it.
    func testPinScopeIsPreciseAndNotWhatTheNVMeRowSays() throws {
        let (_, r) = run(.dirtyPages, .type1PinScope, pages: 70)
        XCTAssertEqual(r.observations["dirty_bitmap"], "written")
        XCTAssertEqual(r.observations["unmap_bitmap"], "written")
        let cfg = try config()
        XCTAssertEqual(cfg.judge(record(.anonPrivate, .dirtyPages, .mdevPin, r), kernel: KernelVersion(6, 1)).kind, .pass)
        let v = cfg.judge(record(.anonPrivate, .dirtyPages, .type1v2, r), kernel: KernelVersion(6, 12))
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("dirty_bitmap: got written, expected all"), v.reason)
        // An mdev kernel that reported a vfio-pci-like "all" would fail the mdev row.
        let (_, all) = run(.dirtyPages, .type1(v2: true), pages: 70)
        XCTAssertEqual(cfg.judge(record(.anonPrivate, .dirtyPages, .mdevPin, all), kernel: KernelVersion(6, 1)).kind, .fail)
    }

    /// A tracker that loses a written page breaks the promise whatever the row says.
    func testAMissingWrittenPageIsABrokenPromise() throws {
        let cfg = try EventConfig.parse(try Yams.compose(yaml: """
            schema: 1
            expectations:
              - kinds: [anon-private]
                events: [hwpt-dirty]
                hw_dirty_cap: present
                event: ok
                dirty_bitmap: written
                semantics: promise
                decided_by: iopt_read_and_clear_dirty_data
            """)!, file: "t.yaml")
        let (_, good) = run(.hwptDirty, .hwpt(ssads: true), pages: 70)
        XCTAssertEqual(good.observations["dirty_bitmap"], "written")
        XCTAssertEqual(cfg.judge(record(.anonPrivate, .hwptDirty, .iommufd, good), kernel: KernelVersion(7, 3)).kind, .pass)
        let (_, bad) = run(.hwptDirty, .hwpt(ssads: true), pages: 70, drop: true)
        XCTAssertEqual(bad.observations["dirty_bitmap"], "other")
        var rec = record(.anonPrivate, .hwptDirty, .iommufd, bad)
        rec.kernelLog = ["DMAR: fault"]
        let v = cfg.judge(rec, kernel: KernelVersion(7, 3))
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.hasPrefix("PROMISE BROKEN") && v.reason.contains("69") && v.reason.contains("DMAR: fault"), v.reason)
        // The same loss hidden under "all" (type1 reports every page) cannot happen: all covers it.
        let (_, all) = run(.dirtyPages, .type1(v2: true), pages: 70, drop: true)
        XCTAssertEqual(all.observations["dirty_bitmap"], "all")
    }

    func testConfigRejectsWhatNoTrackerSays() throws {
        let base = """
              - kinds: [anon-private]
                events: [hwpt-dirty]
                hw_dirty_cap: absent
                event: EOPNOTSUPP
                dirty_bitmap: not-run
                semantics: documented
                decided_by: ssads_supported
            """
        func parse(_ y: String) throws -> EventConfig { try EventConfig.parse(try Yams.compose(yaml: "schema: 1\nexpectations:\n" + y)!, file: "t.yaml") }
        XCTAssertNoThrow(try parse(base))
        for (bad, why) in [(base.replacingOccurrences(of: "not-run", with: "maybe"), "dirty_bitmap \"maybe\""),
                           (base.replacingOccurrences(of: "hw_dirty_cap: absent", with: "hw_dirty_cap: yes"), "hw_dirty_cap \"yes\""),
                           (base.replacingOccurrences(of: "    dirty_bitmap: not-run\n", with: ""), "need \"dirty_bitmap\"")] {
            XCTAssertThrowsError(try parse(bad), why) { XCTAssertTrue(($0 as? ConfigError)?.message.contains(why) ?? false, "\($0)") }
        }
        XCTAssertTrue(DirtyToken.valid("migration_cap", "pgsize=4096,max_bitmap=268435456"))
        XCTAssertFalse(DirtyToken.valid("migration_cap", "pgsize=4K"))
        XCTAssertFalse(DirtyToken.valid("untracked_unmap", "all"))
    }

    func testMatrixCellSaysWhatTheBitmapSaid() {
        XCTAssertEqual(CrossKernelMatrix.eventText(["event": "ok", "dirty_bitmap": "all", "unmap_bitmap": "all"], outcome: .ok), "dirty:all unmap:all")
        XCTAssertEqual(CrossKernelMatrix.eventText(["event": "EOPNOTSUPP", "dirty_bitmap": "not-run"], outcome: .ok), "EOPNOTSUPP dirty:not-run")
    }
}
