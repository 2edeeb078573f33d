import XCTest
import Yams
@testable import Exerciser

/// Boots beside the plain one (matrix.yaml `boots:`), the guests they make, and rows judged
/// only on a boot with the parameters they name (`boot:`), against the real configs.
final class BootTests: XCTestCase {
    static let configs = EventTests.repoConfigs
    static let movable = BootParams(cmdline: "console=ttyS0 intel_iommu=on hugepagesz=2M hugepages=64 movablecore=1G")

    func testCommandLineParameterNames() {
        XCTAssertEqual(Self.movable.names, ["console", "intel_iommu", "hugepagesz", "hugepages", "movablecore"])
        XCTAssertTrue(Self.movable.satisfies(["movablecore"]))
        XCTAssertTrue(Self.movable.satisfies(nil), "a row without boot: holds on any boot")
        XCTAssertFalse(BootParams(cmdline: "console=ttyS0 kernelcore=1G").satisfies(["movablecore"]))
        XCTAssertFalse(BootParams(cmdline: "movablecore_x=1").satisfies(["movablecore"]), "names, not prefixes")
        XCTAssertFalse(BootParams.none.satisfies(["movablecore"]))
    }

    func testTheMatrixBootsEveryKernelOnceMoreWithMovablecore() throws {
        let m = try Matrix.load(Self.configs + "/matrix.yaml")
        let movable = try XCTUnwrap(m.boots.first { $0.name == "movable" })
        XCTAssertEqual(movable.append, ["movablecore=1G"])
        XCTAssertTrue(movable.kinds.contains(.hugetlb2M) && movable.kinds.contains(.anonPrivate))
        XCTAssertFalse(movable.kinds.contains { $0.isEdge }, "argument edges do not depend on the zone")
        let runs = BootPlan.runs(kernels: ["debian:6.1", "test:7.3"], boots: m.boots, selected: [], kinds: [])
        XCTAssertEqual(runs.map(\.label), ["debian:6.1", "debian:6.1+movable", "test:7.3", "test:7.3+movable"])
        XCTAssertEqual(runs.map(\.directory), ["debian-6.1", "debian-6.1+movable", "test-7.3", "test-7.3+movable"])
        XCTAssertEqual(runs[0].append, [])
        XCTAssertNil(runs[0].kinds)
        XCTAssertEqual(runs[1].append, ["movablecore=1G"])
        XCTAssertEqual(runs[1].kinds, movable.kinds)
    }

    func testBootSelectionAndKindFilters() {
        let b = [BootVariant(name: "movable", append: ["movablecore=1G"], kinds: [.anonPrivate, .hugetlb2M], why: "w")]
        XCTAssertEqual(BootPlan.runs(kernels: ["k"], boots: b, selected: ["plain"], kinds: []).map(\.label), ["k"])
        XCTAssertEqual(BootPlan.runs(kernels: ["k"], boots: b, selected: ["movable"], kinds: []).map(\.label), ["k+movable"])
        let narrowed = BootPlan.runs(kernels: ["k"], boots: b, selected: [], kinds: [.hugetlb2M, .hole])
        XCTAssertEqual(narrowed.map(\.label), ["k", "k+movable"])
        XCTAssertEqual(narrowed[1].kinds, [.hugetlb2M])
        XCTAssertEqual(BootPlan.runs(kernels: ["k"], boots: b, selected: [], kinds: [.hole]).map(\.label), ["k"],
                       "a boot left with no kind is not booted")
        XCTAssertEqual(BootPlan.unknown(["movabel"], boots: b), "--boot movabel: no such boot (matrix.yaml has: plain, movable)")
        XCTAssertNil(BootPlan.unknown(["plain", "movable"], boots: b))
    }

    func testMatrixBootRejections() throws {
        func rejects(_ boots: String, _ problem: String, line: UInt = #line) {
            let yaml = "schema: 1\ncases:\n  - kind: anon-private\nboots:\n" + boots
            do { _ = try Matrix.parse(try Yams.compose(yaml: yaml)!, file: "m.yaml"); XCTFail("accepted: \(problem)", line: line) } catch let e as ConfigError {
                XCTAssertTrue(e.message.contains(problem), e.message, line: line)
            } catch { XCTFail("\(error)", line: line) }
        }
        let good = "  - name: movable\n    append: [movablecore=1G]\n    kinds: [anon-private]\n    why: zone\n"
        rejects(good.replacingOccurrences(of: "movable\n", with: "my boot\n"), "letters, digits and dashes")
        rejects(good + good, "named twice")
        rejects(good.replacingOccurrences(of: "[movablecore=1G]", with: "[\"movablecore=1G kernelcore=1G\"]"), "without spaces")
        rejects(good.replacingOccurrences(of: "[anon-private]", with: "[anon-privat]"), "anon-privat")
        rejects(good.replacingOccurrences(of: "    why: zone\n", with: ""), "needs \"why\"")
        rejects(good + "    extra: 1\n", "extra")
    }

    // MARK: judging with boot rows (the real expectations)

    func plain(_ kind: CaseKind, _ outcome: Outcome, backend: BackendKind, checks: [Check] = []) -> CaseRecord {
        var r = VerdictTests.rec(kind, outcome, backend: backend, size: 2 << 20, unmapped: outcome == .ok ? 2 << 20 : nil, checks: checks)
        r.accountedBytes = backend == .mdevMap ? 0 : 2 << 20  // mdev-map pins nothing
        return r
    }

    func testHugetlbPinsFromZoneMovableAreAKnownBugBeforeSixFive() throws {
        let exp = try Expectations.load(Self.configs + "/expectations.yaml")
        let warn = Check("kernel-log", false, "WARNING: CPU: 0 PID: 234 at mm/hugetlb.c:6627 follow_hugetlb_page+0x408/0x760")
        let k61 = KernelVersion(6, 1, 0), k612 = KernelVersion(6, 12, 0)
        // 6.1 on the movable boot: ENOMEM is the known bug, with its WARN in the first case or not at all.
        for b in [BackendKind.type1, .type1v2, .mdevPin] {
            let v = exp.judge(plain(.hugetlb2M, .errno("ENOMEM"), backend: b, checks: [warn]), kernel: k61, boot: Self.movable)
            XCTAssertEqual(v.kind, .xfail, "\(b): \(v.reason)")
            XCTAssertTrue(v.reference?.contains("4849807114b8") == true)
            XCTAssertEqual(exp.judge(plain(.memfdHugetlb2M, .errno("ENOMEM"), backend: b), kernel: k61, boot: Self.movable).kind, .xfail,
                           "WARN_ON_ONCE: later cases show no log line")
        }
        // Any other kernel log line is still a failure.
        let oops = Check("kernel-log", false, "BUG: unable to handle page fault")
        XCTAssertEqual(exp.judge(plain(.hugetlb2M, .errno("ENOMEM"), backend: .type1, checks: [oops]), kernel: k61, boot: Self.movable).kind, .fail)
        // The bug gone on 6.1 (a fixed stable kernel): the pin works, and the row must be updated.
        let fixed = exp.judge(plain(.hugetlb2M, .ok, backend: .type1v2), kernel: k61, boot: Self.movable)
        XCTAssertEqual(fixed.kind, .fail)
        XCTAssertTrue(fixed.reason.contains("no longer reproduces"), fixed.reason)
        // The plain boot, and 6.12 on the movable boot, keep the plain rows: ENOMEM there is a failure.
        XCTAssertEqual(exp.judge(plain(.hugetlb2M, .errno("ENOMEM"), backend: .type1v2), kernel: k61).kind, .fail)
        XCTAssertEqual(exp.judge(plain(.hugetlb2M, .errno("ENOMEM"), backend: .type1v2), kernel: k612, boot: Self.movable).kind, .fail)
        XCTAssertEqual(exp.judge(plain(.hugetlb2M, .ok, backend: .type1v2), kernel: k612, boot: Self.movable).kind, .pass)
        // mdev-map pins nothing: the plain row, whatever the zone.
        XCTAssertEqual(exp.judge(plain(.hugetlb2M, .ok, backend: .mdevMap), kernel: k61, boot: Self.movable).kind, .pass)
    }

    func testAGigantic1GPageAcrossTwoZonesOnSixTwelveAndFreedAtBootLater() throws {
        let exp = try Expectations.load(Self.configs + "/expectations.yaml")
        let skips = try ExpectedSkips.load(Self.configs + "/skips.yaml")
        let straddle = Check("folio-in-one-zone", false, "1 of 1 pinned folios have pages in two zones: Movable×65536 Normal×196608")
        func oneG(_ o: Outcome, _ checks: [Check]) -> CaseRecord {
            var r = plain(.hugetlb1G, o, backend: .type1v2, checks: checks)
            r.size = 1 << 30; r.unmappedBytes = o == .ok ? 1 << 30 : nil; r.accountedBytes = 1 << 30
            return r
        }
        let k612 = KernelVersion(6, 12, 117)
        let v = exp.judge(oneG(.ok, [straddle]), kernel: k612, boot: Self.movable)
        XCTAssertEqual(v.kind, .xfail, v.reason)
        let gone = exp.judge(oneG(.ok, [Check("folio-in-one-zone", true, "every pinned folio lies in one zone")]), kernel: k612, boot: Self.movable)
        XCTAssertEqual(gone.kind, .fail)
        XCTAssertTrue(gone.reason.contains("the folio-in-one-zone check passed"), gone.reason)
        XCTAssertEqual(exp.judge(oneG(.ok, [straddle]), kernel: k612).kind, .fail, "the plain boot has no known bug to hide it")
        // 7.3 frees the page at boot: the skip is expected on the movable boot only.
        let skipped = oneG(.skip("1 free 1G hugepage(s) needed, 0 free (reserve with hugepagesz=/hugepages= or nr_hugepages)"), [])
        let k73 = KernelVersion(7, 3, 4)
        XCTAssertEqual(skips.judge(skipped, Verdict(.skip, "s"), kernel: k73, release: "7.3.4+deb13-amd64", boot: Self.movable).kind, .skip)
        XCTAssertEqual(skips.judge(skipped, Verdict(.skip, "s"), kernel: k73, release: "7.3.4+deb13-amd64").kind, .fail)
    }

    func eventRecord(_ kind: CaseKind, _ event: CaseEvent, _ r: EventResult) -> CaseRecord {
        var c = Runner.record(PlannedCase(backend: .type1v2, phase: .device, kind: kind, instance: nil, size: 2 << 20,
                                          flags: kind.defaultFlags, event: event), iova: 0, outcome: r.mapOutcome)
        c.observations = r.observations
        c.checks = r.checks
        c.unmappedBytes = 2 << 20
        return c
    }

    func testEventCasesWhoseMapFailsOnTheMovableBoot() throws {
        let cfg = try EventConfig.load(Self.configs + "/events.yaml")
        var failed = EventResult(); failed.mapOutcome = .errno("ENOMEM")
        let k61 = KernelVersion(6, 1, 0)
        let rec = eventRecord(.hugetlb2M, .compact, failed)
        XCTAssertEqual(cfg.judge(rec, kernel: k61, boot: Self.movable).kind, .xfail)
        XCTAssertEqual(cfg.judge(rec, kernel: k61).kind, .fail, "on the plain boot the map must work")
        XCTAssertEqual(cfg.judge(rec, kernel: KernelVersion(6, 12, 0), boot: Self.movable).kind, .fail)
        var worked = EventResult(); worked.observations = ["event": "ok", "device_write": "seen", "cpu_write": "seen"]
        let v = cfg.judge(eventRecord(.hugetlb2M, .compact, worked), kernel: k61, boot: Self.movable)
        XCTAssertEqual(v.kind, .fail, "a known bug that stops reproducing")
        XCTAssertTrue(v.reason.contains("no longer reproduces"), v.reason)
    }

    func testEventCasesOnTheCrossZone1GPageAreTheKnownBug() throws {
        let cfg = try EventConfig.load(Self.configs + "/events.yaml")
        var seen = EventResult(); seen.observations = ["event": "ok", "device_write": "seen", "cpu_write": "seen"]
        seen.checks = [Check("folio-in-one-zone", false, "1 of 1 pinned folios have pages in two zones: Movable×65536 Normal×196608")]
        let k612 = KernelVersion(6, 12, 117)
        XCTAssertEqual(cfg.judge(eventRecord(.hugetlb1G, .compact, seen), kernel: k612, boot: Self.movable).kind, .xfail)
        XCTAssertEqual(cfg.judge(eventRecord(.hugetlb1G, .compact, seen), kernel: k612).kind, .fail, "not on the plain boot")
        var whole = seen; whole.checks = []
        let v = cfg.judge(eventRecord(.hugetlb1G, .compact, whole), kernel: k612, boot: Self.movable)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("the folio-in-one-zone check passed"), v.reason)
        XCTAssertEqual(cfg.judge(eventRecord(.hugetlb1G, .compact, whole), kernel: k612).kind, .pass)
    }

    func testEventRowMapRules() throws {
        func parse(_ yaml: String) throws -> EventConfig {
            try EventConfig.parse(try Yams.compose(yaml: "schema: 1\nexpectations:\n" + yaml)!, file: "t.yaml")
        }
        let row = """
          - kinds: [hugetlb-2M]
            events: [compact]
            map: ENOMEM
            semantics: promise
            decided_by: follow_hugetlb_page
            known_bug: bug
        """
        XCTAssertNoThrow(try parse(row))
        XCTAssertThrowsError(try parse(row + "\n    event: ok"), "no observations when the map fails")
        XCTAssertThrowsError(try parse(row.replacingOccurrences(of: "ENOMEM", with: "ENOPE")))
        XCTAssertThrowsError(try parse(row.replacingOccurrences(of: "    known_bug: bug", with: "    kernel_log: x")),
                             "a kernel_log belongs to a known bug")
        XCTAssertThrowsError(try parse(row + "\n    boot: [\"movablecore=1G\"]"), "boot names parameters, not values")
    }
}

/// The pinned-outside-movable check of plain cases on a boot with a ZONE_MOVABLE.
final class MovableCheckTests: XCTestCase {
    static let zoneinfo = """
    Node 0, zone      DMA
      pages free     3840
            spanned  4095
            present  3998
      start_pfn:           1
    Node 0, zone    DMA32
            spanned  1044480
      start_pfn:           4096
    Node 0, zone   Normal
            spanned  0
      start_pfn:           0
    Node 0, zone  Movable
            spanned  262144
      start_pfn:           1048576
    """

    func planned(_ k: CaseKind, _ b: BackendKind = .type1) -> PlannedCase {
        PlannedCase(backend: b, phase: .device, kind: k, instance: nil, size: 16384, flags: k.defaultFlags)
    }

    func testOnlyPinningBackendsAndStructPageKindsOnAMovableBoot() {
        XCTAssertNotNil(MovableCheck.zones(for: planned(.anonPrivate), zoneinfo: Self.zoneinfo))
        XCTAssertNotNil(MovableCheck.zones(for: planned(.hugetlb2M, .mdevPin), zoneinfo: Self.zoneinfo))
        XCTAssertNil(MovableCheck.zones(for: planned(.anonPrivate, .mdevMap), zoneinfo: Self.zoneinfo), "mdev-map pins nothing")
        XCTAssertNil(MovableCheck.zones(for: planned(.devdax), zoneinfo: Self.zoneinfo), "ZONE_DEVICE only lies in Movable's span")
        XCTAssertNil(MovableCheck.zones(for: planned(.bar), zoneinfo: Self.zoneinfo))
        let plain = Self.zoneinfo.replacingOccurrences(of: "spanned  262144", with: "spanned  0")
        XCTAssertNil(MovableCheck.zones(for: planned(.anonPrivate), zoneinfo: plain), "no Movable zone: nothing to check")
    }

    func testSummaryAndTheCheck() throws {
        let z = try XCTUnwrap(MovableCheck.zones(for: planned(.anonPrivate), zoneinfo: Self.zoneinfo))
        XCTAssertEqual(MovableCheck.summary([0x100000, 0x100001, 0x5000, nil], z), "DMA32×1 Movable×2 not present×1")
        var rec = Runner.record(planned(.anonPrivate), iova: 0, outcome: .ok)
        // This process's own pages: whatever zone they are in, the property and the check are there.
        let page = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { page.deallocate() }
        page.storeBytes(of: 1, as: UInt8.self)
        let a = UInt64(UInt(bitPattern: page))
        MovableCheck.record(&rec, vaddr: a, before: [0x100000], pinned: 1, zones: z)
        XCTAssertNotNil(rec.properties["pages_before_map"])
        XCTAssertEqual(rec.properties["pages_before_map"], "Movable×1")
        let check = try XCTUnwrap(rec.checks.first { $0.name == "pinned-outside-movable" })
        // Unprivileged, pagemap hides PFNs ("not present"): never counted as Movable.
        if PageInfo.pfns(a, pages: 1)[0].map({ PageInfo.zone(of: $0, in: z) }) == "Movable" {
            XCTAssertFalse(check.passed)
        } else {
            XCTAssertTrue(check.passed, check.detail)
        }
    }

    func testAPageLeftInMovableFails() throws {
        // A zone table where every PFN this process can have lies in Movable.
        let all = [PageInfo.Zone(name: "Movable", start: 0, spanned: UInt64.max / 2)]
        let page = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { page.deallocate() }
        page.storeBytes(of: 1, as: UInt8.self)
        let a = UInt64(UInt(bitPattern: page))
        guard PageInfo.pfns(a, pages: 1)[0] != nil else {
            HostPrecondition.pagemap.missing("pagemap shows no PFNs to this user")
            throw XCTSkip("pagemap shows no PFNs to this user (needs root)")
        }
        var rec = Runner.record(planned(.anonPrivate), iova: 0, outcome: .ok)
        MovableCheck.record(&rec, vaddr: a, before: [nil], pinned: 1, zones: all)
        let check = try XCTUnwrap(rec.checks.first { $0.name == "pinned-outside-movable" })
        XCTAssertFalse(check.passed)
        XCTAssertEqual(check.detail, "1 of 1 pinned pages are in ZONE_MOVABLE (d1e153fea2a8 migrates them out)")
    }

    /// A folio is in the zone of its head page (folio_is_longterm_pinnable); tails elsewhere are named.
    func testFoliosAreJudgedByTheirHeadAndAStraddleIsNamed() throws {
        let z = [PageInfo.Zone(name: "Normal", start: 0, spanned: 1000), PageInfo.Zone(name: "Movable", start: 1000, spanned: 1000)]
        let page = UnsafeMutableRawPointer.allocate(byteCount: 2 * 4096, alignment: 4096)
        defer { page.deallocate() }
        page.storeBytes(of: 1, as: UInt8.self)
        (page + 4096).storeBytes(of: 1, as: UInt8.self)
        let a = UInt64(UInt(bitPattern: page))
        let live = PageInfo.pfns(a, pages: 2)
        guard live.allSatisfy({ $0 != nil }) else {
            HostPrecondition.pagemap.missing("pagemap shows no PFNs to this user")
            throw XCTSkip("pagemap shows no PFNs to this user (needs root)")
        }
        // Zones drawn around this process's two pages: the head in Normal, the tail in Movable.
        let head = live[0]!, tail = live[1]!
        let around = [PageInfo.Zone(name: "Normal", start: head, spanned: 1), PageInfo.Zone(name: "Movable", start: tail, spanned: 1)]
        var rec = Runner.record(planned(.hugetlb2M), iova: 0, outcome: .ok)
        MovableCheck.record(&rec, vaddr: a, before: [nil, nil], pinned: 2, zones: head == tail ? z : around, stride: 2)
        let check = try XCTUnwrap(rec.checks.first { $0.name == "pinned-outside-movable" })
        XCTAssertTrue(check.passed, check.detail)
        let straddle = try XCTUnwrap(rec.checks.first { $0.name == "folio-in-one-zone" })
        XCTAssertFalse(straddle.passed)
        XCTAssertEqual(straddle.detail, "1 of 1 pinned folios have pages in two zones: Movable×1 Normal×1")
        let swapped = [PageInfo.Zone(name: "Movable", start: head, spanned: 1), PageInfo.Zone(name: "Normal", start: tail, spanned: 1)]
        var bad = Runner.record(planned(.hugetlb2M), iova: 0, outcome: .ok)
        MovableCheck.record(&bad, vaddr: a, before: [nil, nil], pinned: 2, zones: swapped, stride: 2)
        XCTAssertEqual(bad.checks.first { $0.name == "pinned-outside-movable" }?.detail,
                       "1 of 1 pinned folios (by their head page) are in ZONE_MOVABLE (d1e153fea2a8 migrates them out)")
        XCTAssertEqual(MovableCheck.stride(.hugetlb1G), 262144)
        XCTAssertEqual(MovableCheck.stride(.anonPrivate), 1)
    }
}

/// A tree's plain and movable boots run side by side: they must share one layout of the tree.
final class KernelTreeTests: XCTestCase {
    func testTwoGuestsPreparingOneTreeAtOnceShareItsLayout() throws {
        let fm = FileManager.default
        let base = fm.temporaryDirectory.appendingPathComponent("tree-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? fm.removeItem(atPath: base) }
        let tree = base + "/linux", cache = base + "/cache"
        try fm.createDirectory(atPath: tree + "/arch/x86/boot", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: tree + "/include/config", withIntermediateDirectories: true)
        try "all:\n".write(toFile: tree + "/Makefile", atomically: true, encoding: .utf8)
        try "# CONFIG_MODULES is not set\n".write(toFile: tree + "/.config", atomically: true, encoding: .utf8)
        try "bzImage".write(toFile: tree + "/arch/x86/boot/bzImage", atomically: true, encoding: .utf8)
        try "7.3.4-mine\n".write(toFile: tree + "/include/config/kernel.release", atomically: true, encoding: .utf8)
        let log = URL(fileURLWithPath: base + "/log")
        let results = JobPool.run(count: 4, jobs: 4) { _ in Result { try KernelTree.prepare(tree, cache: cache, log: log) } }
        let dirs = try results.map { try $0.get() }
        XCTAssertEqual(Set(dirs).count, 1)
        XCTAssertEqual(try String(contentsOfFile: dirs[0] + "/kver", encoding: .utf8), "7.3.4-mine")
        XCTAssertEqual(try String(contentsOfFile: dirs[0] + "/vmlinuz", encoding: .utf8), "bzImage")
    }
}

/// Opt-in event templates (`opt_in: true`) run only when --event names their event.
final class OptInEventTests: XCTestCase {
    func testAnOptInTemplateRunsOnlyWhenAskedFor() throws {
        let cfg = try EventConfig.parse(try Yams.compose(yaml: """
            schema: 1
            cases:
              - kinds: [anon-private, thp]
                events: [ksm-merge]
                backends: [type1v2]
                opt_in: true
              - kinds: [anon-private]
                events: [compact]
                backends: [type1v2]
            expectations: []
            """)!, file: "t.yaml")
        let m = Matrix(backends: BackendKind.allCases, cases: [])
        XCTAssertEqual(cfg.plan(backends: nil, kinds: nil, events: nil, matrix: m).compactMap(\.event), [.compact])
        let asked = cfg.plan(backends: nil, kinds: nil, events: [.ksmMerge], matrix: m)
        XCTAssertEqual(asked.compactMap(\.event), [.ksmMerge, .ksmMerge])
        XCTAssertEqual(cfg.plan(backends: nil, kinds: nil, events: [.compact], matrix: m).compactMap(\.event), [.compact])
    }

    func testKSMMergeIsInTheDefaultMatrixWithMlocked() throws {
        let cfg = try EventConfig.load(EventTests.repoConfigs + "/events.yaml")
        let m = Matrix(backends: BackendKind.allCases, cases: [])
        let ksm = cfg.plan(backends: nil, kinds: nil, events: nil, matrix: m).filter { $0.event == .ksmMerge }
        XCTAssertEqual(ksm.count, 18, "nine kinds on type1v2 and iommufd")
        XCTAssertTrue(ksm.contains { $0.kind == .mlocked })
    }
}
