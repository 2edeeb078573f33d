import Foundation
import XCTest
import Yams
import VFIO
@testable import Exerciser

/// ksm-merge: where its page observations sit among the steps, the page states and the bounded
/// wait it is built from, each observed state judged against configs/events.yaml, and its knobs.
final class KSMEventTests: XCTestCase {
    func config() throws -> EventConfig { try EventConfig.load(EventTests.repoConfigs + "/events.yaml") }

    func record(_ kind: CaseKind, _ r: EventResult, backend: BackendKind = .type1v2) -> CaseRecord {
        var c = Runner.record(PlannedCase(backend: backend, phase: .device, kind: kind, instance: nil, size: 16384,
                                          flags: kind.defaultFlags, event: .ksmMerge), iova: 0, outcome: r.mapOutcome)
        c.observations = r.observations
        c.checks = r.checks
        c.unmappedBytes = 16384
        return c
    }

    func judge(_ kind: CaseKind, _ k: FakeEventKernel, kernel: KernelVersion = KernelVersion(6, 12)) throws -> (Verdict, EventResult) {
        let r = EventExecutor.run(.ksmMerge, world: k)
        return (try config().judge(record(kind, r), kernel: kernel), r)
    }

    // MARK: sequencing

    /// What KSM did is read right after the scans, before the device or the CPU writes (a write
    /// breaks a merge); then the usual both-ways check on the pinned pages.
    func testThePagesAreObservedRightAfterTheScansAndBeforeAnyWrite() {
        let s = EventPlan.steps(for: .ksmMerge)
        let apply = s.firstIndex(of: .apply)!
        XCTAssertEqual(Array(s[(apply + 1)...(apply + 2)]), [.pagesObserve("twin"), .pagesObserve("pinned")])
        XCTAssertEqual(s.first, .cpuWrite(.pre), "the twins copy what the pinned pages hold")
        XCTAssertLessThan(s.firstIndex(of: .baseline(.pre))!, apply)
        XCTAssertEqual(Set(CaseEvent.ksmMerge.observations), ["event", "twin", "pinned", "device_write", "cpu_write"])
        let k = FakeEventKernel(memory: .privateAnon)
        _ = EventExecutor.run(.ksmMerge, world: k)
        let a = k.log.firstIndex(of: "apply")!
        XCTAssertEqual(Array(k.log[(a + 1)...(a + 2)]), ["pageStates", "pageStates"])
        XCTAssertEqual(k.log.last, "unmap")
    }

    func testAFailedBaselineNeitherScansNorObserves() {
        let k = FakeEventKernel(memory: .privateAnon)
        k.failOn = "deviceReads"
        let r = EventExecutor.run(.ksmMerge, world: k)
        XCTAssertFalse(k.log.contains("apply") || k.log.contains("pageStates"), "\(k.log)")
        XCTAssertNil(r.observations["twin"])
        XCTAssertEqual(k.log.last, "unmap")
    }

    // MARK: each observed state, judged

    func testPrivateKindsMergeTheTwinAndKeepThePinnedPages() throws {
        for kind in [CaseKind.anonPrivate, .thp] {
            let (v, r) = try judge(kind, FakeEventKernel(memory: .privateAnon))
            XCTAssertEqual(r.observations, ["event": "ok", "twin": "merged", "pinned": "kept", "device_write": "seen", "cpu_write": "seen"])
            XCTAssertEqual(v.kind, .pass, "\(kind): \(v.reason)")
            XCTAssertTrue(v.decidedBy?.contains("write_protect_page") == true, v.decidedBy ?? "")
        }
    }

    func testKindsKSMIgnoresMergeNothingAndStillAgree() throws {
        for kind in [CaseKind.anonShared, .memfd, .memfdHugetlb2M, .hugetlb2M, .tmpfsFile] {
            let (v, r) = try judge(kind, FakeEventKernel(memory: .shared))
            XCTAssertEqual(r.observations["twin"], "unmerged")
            XCTAssertEqual(v.kind, .pass, "\(kind): \(v.reason)")
            XCTAssertTrue(v.decidedBy?.contains("ksm_madvise") == true)
        }
        // Device-dax has no twin; its row says so, and a twin that merged would not be it.
        var dax = EventResult()
        dax.observations = ["event": "ok", "twin": "none", "pinned": "kept", "device_write": "seen", "cpu_write": "seen"]
        let cfg = try config()
        XCTAssertEqual(cfg.judge(record(.devdax, dax), kernel: KernelVersion(6, 1)).kind, .pass)
        dax.observations["twin"] = "merged"
        XCTAssertEqual(cfg.judge(record(.devdax, dax), kernel: KernelVersion(6, 1)).kind, .fail)
    }

    /// A kernel whose write_protect_page let the pinned page merge: the process maps the KSM
    /// page, the device the pinned one. Named as a broken promise, with the kernel log.
    func testAMergedPinnedPageBreaksThePromise() throws {
        let (v, r) = try judge(.anonPrivate, FakeEventKernel(memory: .privateAnon, bug: .ksmMergesPinnedPage))
        XCTAssertEqual(r.observations["pinned"], "merged")
        XCTAssertEqual(r.observations["device_write"], "stale", "the process still reads its pre-merge content")
        XCTAssertEqual(r.observations["cpu_write"], "device-own", "the process's write went to its COW copy of the KSM page")
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.hasPrefix("PROMISE BROKEN: ") && v.reason.contains("pinned: got merged, expected kept") && v.reason.contains("kernel log:"), v.reason)
        // Merged but still coherent (say the device followed): the pinned page moving is itself the break.
        var merged = r
        merged.observations["device_write"] = "seen"; merged.observations["cpu_write"] = "seen"
        let m = try config().judge(record(.anonPrivate, merged), kernel: KernelVersion(7, 3))
        XCTAssertTrue(m.kind == .fail && m.reason.hasPrefix("PROMISE BROKEN"), m.reason)
    }

    /// When KSM merged nothing the case proves nothing about the pinned pages: it must not pass.
    func testAKernelThatMergesNothingDoesNotPass() throws {
        let (v, r) = try judge(.anonPrivate, FakeEventKernel(memory: .privateAnon, bug: .ksmMergesNothing))
        XCTAssertEqual(r.observations["twin"], "unmerged")
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("twin: got unmerged, expected merged"), v.reason)
        var timedOut = r
        timedOut.observations["event"] = "ksmd: full_scans 7 → 8 in 30 s, 3 wanted"
        let t = try config().judge(record(.anonPrivate, timedOut), kernel: KernelVersion(6, 1))
        XCTAssertTrue(t.kind == .fail && t.reason.contains("full_scans 7 → 8"), t.reason)
        var partly = r
        partly.observations["twin"] = Sight.summarize(["merged", "unmerged", "merged"])
        XCTAssertEqual(try config().judge(record(.anonPrivate, partly), kernel: KernelVersion(6, 1)).kind, .fail)
    }

    func testAFailedCleanUpCheckFailsTheCase() throws {
        var r = EventExecutor.run(.ksmMerge, world: FakeEventKernel(memory: .privateAnon))
        r.checks.append(Check("ksm-unmerged", false, "2 of 4 twin pages still share a KSM page after MADV_UNMERGEABLE"))
        let v = try config().judge(record(.anonPrivate, r), kernel: KernelVersion(6, 12))
        XCTAssertTrue(v.kind == .fail && v.reason.contains("ksm-unmerged"), v.reason)
    }

    func testConfigRowsForKSM() throws {
        func row(_ extra: String) throws -> EventConfig {
            try EventConfig.parse(try Yams.compose(yaml: """
                schema: 1
                expectations:
                  - kinds: [anon-private]
                    events: [ksm-merge]
                    event: ok
                    device_write: seen
                    cpu_write: seen
                    semantics: promise
                    decided_by: write_protect_page
                \(extra)
                """)!, file: "t.yaml")
        }
        XCTAssertNoThrow(try row("    twin: merged\n    pinned: kept"))
        for (bad, problem) in [("    twin: merged\n    pinned: merged", "pinned must be kept"),
                               ("    twin: seen\n    pinned: kept", "twin \"seen\" must be one of merged, unmerged, none"),
                               ("    twin: merged", "need \"pinned\"")] {
            XCTAssertThrowsError(try row(bad)) { e in
                XCTAssertTrue((e as? ConfigError)?.message.contains(problem) == true, "\(e)")
            }
        }
    }

    // MARK: the pure parts of the real world

    func testTwinAndPinnedPageStates() {
        let ksm: (UInt64) -> Bool? = { $0 >= 100 }
        XCTAssertEqual(KSM.twinStates([100, 101, 5], [100, 102, 5], ksm: ksm), ["merged", "unmerged", "unmerged"],
                       "one PFN that is not a KSM page is not a merge (the pages were never two)")
        XCTAssertEqual(KSM.twinStates([100, nil], [100, nil], ksm: { _ in nil }), ["merged", "unmerged"], "no kpageflags: the PFNs decide")
        XCTAssertEqual(KSM.pinnedStates(pinned: [1, 2, 3, 4, 5], now: [1, 100, 9, nil, 101], twin: [100, 100, 100, 100, 102], ksm: ksm),
                       ["kept", "merged", "moved", "moved", "merged"])
        XCTAssertEqual(KSM.pinnedStates(pinned: [1], now: [7], twin: [7], ksm: { _ in nil }), ["merged"], "the twin's PFN")
        XCTAssertEqual(KSM.pinnedStates(pinned: [7], now: [7], twin: [7], ksm: { _ in false }), ["merged"],
                       "the pinned page itself became the twin's KSM page")
        XCTAssertEqual(KSM.pinnedStates(pinned: [150], now: [150], twin: [100], ksm: { _ in true }), ["kept"],
                       "6.12 flags every anonymous page KPF_KSM: an unmoved page not shared with the twin is kept")
    }

    func testTheWaitIsBoundedAndSaysWhy() {
        var scans: [UInt64] = [5, 5, 6, 7, 8, 8, 8]
        var clock: UInt64 = 0
        let ok = KSM.wait(passes: 3, timeoutNanos: 1_000, fullScans: { scans.isEmpty ? 8 : scans.removeFirst() },
                          now: { clock }, sleep: { clock += 10 })
        XCTAssertNil(ok.error)
        XCTAssertEqual(ok.scans, 3)
        clock = 0
        var stuck: UInt64 = 41
        let t = KSM.wait(passes: 3, timeoutNanos: 2_000_000_000, fullScans: { stuck }, now: { clock }, sleep: { clock += 1_000_000_000; stuck = 42 })
        XCTAssertEqual(t.error, "ksmd: full_scans 41 → 42 in 3 s, 3 wanted")
        clock = 0
        let notDone = KSM.wait(passes: 1, timeoutNanos: 5, fullScans: { 9 }, done: { false }, now: { clock }, sleep: { clock += 2 })
        XCTAssertNotNil(notDone.error, "the scans alone are not enough when done() never holds")
        XCTAssertEqual(KSM.wait(passes: 1, timeoutNanos: 5, fullScans: { nil }).error, "cannot read /sys/kernel/mm/ksm/full_scans")
    }

    // MARK: knobs

    func testTheKnobsAreSavedForTheParentAndPutBackRunFirst() throws {
        let c = PlannedCase(backend: .type1v2, phase: .device, kind: .anonPrivate, instance: nil, size: 65536, flags: ["read", "write"], event: .ksmMerge)
        XCTAssertEqual(CaseKnobs.paths(for: c), KSM.knobs)
        XCTAssertEqual(KSM.knobs.first, "/sys/kernel/mm/ksm/run")
        XCTAssertEqual(CaseKnobs.paths(for: PlannedCase(backend: .type1v2, phase: .device, kind: .anonPrivate, instance: nil, size: 65536,
                                                        flags: ["read", "write"], event: .compact)), [])
        let dir = NSTemporaryDirectory() + "/ksm-knobs-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let paths = ["run", "pages_to_scan", "sleep_millisecs"].map { dir + "/" + $0 }
        for (p, v) in zip(paths, ["0", "100", "20"]) { try (v + "\n").write(toFile: p, atomically: true, encoding: .utf8) }
        let snap = CaseKnobs.snapshot(paths)
        XCTAssertEqual(snap.map(\.value), ["0", "100", "20"])
        XCTAssertTrue(CaseKnobs.write(paths[0], "1") && CaseKnobs.write(paths[2], "0"))
        let back = CaseKnobs.putBack(snap)
        XCTAssertEqual(back.map(\.path), [paths[0], paths[2]], "only what changed, run first")
        XCTAssertEqual(back.map(\.was), ["1", "0"])
        XCTAssertTrue(back.allSatisfy(\.ok))
        XCTAssertEqual(paths.map { CaseKnobs.read($0) }, ["0", "100", "20"])
        XCTAssertEqual(CaseKnobs.putBack(snap).count, 0, "nothing left to put back")
    }

    func testSmartScanIsTurnedOffWhereTheKernelHasIt() {
        let with = KSM.setup(present: { _ in true }), without = KSM.setup(present: { _ in false })
        XCTAssertEqual(with.last?.0, "/sys/kernel/mm/ksm/smart_scan")
        XCTAssertEqual(with.last?.1, "0", "a skipped twin can miss its partner's scan for good")
        XCTAssertFalse(without.contains { $0.0.hasSuffix("/smart_scan") }, "before 6.7 there is no smart_scan to write")
        XCTAssertFalse((with + without).contains { $0.0.hasSuffix("/run") }, "run=1 comes after MADV_MERGEABLE, not with the pace")
        XCTAssertEqual(KSM.start.0, "/sys/kernel/mm/ksm/run")
        XCTAssertTrue(KSM.knobs.contains("/sys/kernel/mm/ksm/smart_scan"), "saved, and put back after the case")
    }

    func testTheMatrixCellSaysWhatKSMDid() {
        let o = ["event": "ok", "twin": "merged", "pinned": "kept", "device_write": "seen", "cpu_write": "seen"]
        XCTAssertEqual(CrossKernelMatrix.eventText(o, outcome: .ok), "seen/seen ksm:merged/kept")
    }
}
