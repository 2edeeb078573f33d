import Foundation
import XCTest
import Yams
import VFIO
@testable import Exerciser

/// Kind × event cases: the order of the steps, the executor's guarantees, the classification of
/// what each side saw (against a page model of the kernel), the judging of each observed state
/// against configs/events.yaml, and that file's own validation.
final class EventTests: XCTestCase {
    static let repoConfigs = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("configs").path

    func config() throws -> EventConfig { try EventConfig.load(Self.repoConfigs + "/events.yaml") }

    func record(_ kind: CaseKind, _ event: CaseEvent, backend: BackendKind = .type1v2, _ r: EventResult) -> CaseRecord {
        var c = Runner.record(PlannedCase(backend: backend, phase: .device, kind: kind, instance: nil, size: 16384,
                                          flags: kind.defaultFlags, event: event), iova: 0, outcome: r.mapOutcome)
        c.observations = r.observations
        c.checks = r.checks
        c.unmappedBytes = 16384
        return c
    }

    // MARK: sequencing

    func testEveryEventMapsBeforeItActsAndUnmapsLast() {
        for e in CaseEvent.allCases {
            let s = EventPlan.steps(for: e)
            XCTAssertEqual(s.last, .unmap, "\(e)")
            let map = s.firstIndex(of: .map), apply = s.firstIndex(of: .apply)
            XCTAssertNotNil(map, "\(e)")
            XCTAssertLessThan(map!, apply!, "\(e): the event acts on a pinned mapping")
            if let b = s.firstIndex(where: { if case .baseline = $0 { return true } else { return false } }) {
                XCTAssertLessThan(b, apply!, "\(e): the baseline is taken before the event")
            }
            // Every observation after the event, and each device write checked as landed.
            for (i, step) in s.enumerated() where step.observation != nil && step.observation != "event" && !step.observesBeforeEvent {
                XCTAssertGreaterThan(i, apply!, "\(e): \(step) observes before the event")
            }
        }
    }

    /// The classic COW bug needs the parent to write first after fork; the child-first order
    /// exercises the other side. Both must end the child before unmapping.
    func testForkOrders() {
        let p = EventPlan.steps(for: .forkParentWrites), c = EventPlan.steps(for: .forkChildWrites)
        XCTAssertEqual(p[p.firstIndex(of: .fork)! + 1], .cpuWrite(.cpu))
        XCTAssertEqual(c[c.firstIndex(of: .fork)! + 1], .childWrite(.child))
        for s in [p, c] { XCTAssertLessThan(s.firstIndex(of: .endChild)!, s.firstIndex(of: .unmap)!) }
        XCTAssertEqual(Set(CaseEvent.forkChildWrites.observations), ["event", "child_write", "device_write", "child_sees", "cpu_write"])
    }

    func testAFailedBaselineSkipsTheEventButStillUnmaps() {
        let k = FakeEventKernel(memory: .privateAnon)
        k.failOn = "deviceReads"
        let r = EventExecutor.run(.madvDontneed, world: k)
        XCTAssertFalse(k.log.contains("apply"), "\(k.log)")
        XCTAssertEqual(k.log.last, "unmap")
        XCTAssertTrue(r.checks.contains { !$0.passed })
    }

    func testAChildThatFailsIsStillEndedAndTheMappingUnmapped() {
        let k = FakeEventKernel(memory: .privateAnon)
        k.failOn = "childWrite"
        let r = EventExecutor.run(.forkChildWrites, world: k)
        XCTAssertEqual(Array(k.log.suffix(2)), ["endChild", "unmap"])
        XCTAssertNil(r.observations["cpu_write"], "nothing observed after the failure")
        XCTAssertTrue(r.checks.contains { $0.name == "step" && !$0.passed })
    }

    // MARK: the page model judged against configs/events.yaml

    func judge(_ kind: CaseKind, _ e: CaseEvent, _ k: FakeEventKernel, kernel: KernelVersion = KernelVersion(6, 12)) throws -> (Verdict, EventResult) {
        let r = EventExecutor.run(e, world: k)
        return (try config().judge(record(kind, e, r), kernel: kernel), r)
    }

    func testAKernelThatKeepsItsPromisesPassesEveryRow() throws {
        let cases: [(CaseKind, FakeEventKernel.Memory, [CaseEvent])] = [
            (.anonPrivate, .privateAnon, [.forkParentWrites, .forkChildWrites, .madvDontneed, .remapAnon, .mprotectRoRw]),
            (.memfd, .shared, [.forkParentWrites, .forkChildWrites, .madvDontneed, .remapAnon, .vaddrOtherMemfd]),
        ]
        for (kind, mem, events) in cases {
            for e in events {
                let (v, r) = try judge(kind, e, FakeEventKernel(memory: mem))
                XCTAssertEqual(v.kind, .pass, "\(kind)+\(e): \(v.reason) \(r.observations)")
            }
        }
    }

    /// A kernel that shares a pinned private page COW at fork: the parent's write lands in a
    /// new page the device never sees. That is a broken promise, named as one.
    func testForkThatSharesThePinnedPageBreaksThePromise() throws {
        let (v, r) = try judge(.anonPrivate, .forkParentWrites, FakeEventKernel(memory: .privateAnon, bug: .forkSharesPinnedPage))
        XCTAssertEqual(r.observations["cpu_write"], "stale", "the device still reads the page from before the fork")
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.hasPrefix("PROMISE BROKEN: "), v.reason)
        XCTAssertTrue(v.reason.contains("kernel log:"), v.reason)
    }

    /// 84209e87c696 (6.2): a R/O pin of untouched memory must unshare the zero page. The old
    /// behaviour is documented below 6.2 and a broken promise from 6.2 on.
    func testReadOnlyPinOfTheZeroPageAroundTheSixTwoBoundary() throws {
        let old = EventExecutor.run(.cpuWriteAfterReadPin, world: FakeEventKernel(memory: .untouched, bug: .readPinTakesZeroPage))
        XCTAssertEqual(old.observations["cpu_write"], "zero")
        let cfg = try config()
        XCTAssertEqual(cfg.judge(record(.anonUntouched, .cpuWriteAfterReadPin, old), kernel: KernelVersion(6, 1)).kind, .pass)
        let v = cfg.judge(record(.anonUntouched, .cpuWriteAfterReadPin, old), kernel: KernelVersion(6, 2))
        XCTAssertTrue(v.kind == .fail && v.reason.hasPrefix("PROMISE BROKEN"), v.reason)
        let fixed = EventExecutor.run(.cpuWriteAfterReadPin, world: FakeEventKernel(memory: .untouched))
        XCTAssertEqual(cfg.judge(record(.anonUntouched, .cpuWriteAfterReadPin, fixed), kernel: KernelVersion(6, 12)).kind, .pass)
        XCTAssertEqual(cfg.judge(record(.anonUntouched, .cpuWriteAfterReadPin, fixed), kernel: KernelVersion(6, 1)).kind, .fail,
                       "a 6.1 that unshares is not what the row documents")
    }

    func testWhatTheCPUSawInsteadIsNamed() {
        let k = FakeEventKernel(memory: .privateAnon)
        let r = EventExecutor.run(.madvDontneed, world: k)
        XCTAssertEqual(r.observations["device_write"], "zero", "a read fault after the zap maps the zero page")
        XCTAssertEqual(r.observations["cpu_write"], "device-own", "the device still holds its own write")
        let o = EventExecutor.run(.vaddrOtherMemfd, world: FakeEventKernel(memory: .shared))
        XCTAssertEqual(o.observations["device_write"], "fill")
        XCTAssertEqual(Sight.summarize(["seen", "stale", "seen"]), "mixed(seen×2,stale×1)")
        XCTAssertEqual(Sight.summarize(["zero", "zero"]), "zero")
    }

    // MARK: MADV_COLLAPSE and the THP split

    func testCollapseAndSplitActOnThePinAndCheckBothWays() {
        for e in [CaseEvent.madvCollapse, .thpSplit, .madvCollapsePteMapped] {
            XCTAssertEqual(EventPlan.steps(for: e), [.cpuWrite(.pre), .map, .baseline(.pre), .apply,
                                                     .deviceWrite(.device), .deviceHolds(.device), .cpuObserve("device_write", .device),
                                                     .cpuWrite(.cpu), .deviceObserve("cpu_write", .cpu), .unmap], "\(e)")
            XCTAssertEqual(Set(e.observations), ["event", "device_write", "cpu_write"])
        }
    }

    /// The return code is the cell's outcome: an errno the row does not name fails as a plain
    /// mismatch, not as a broken promise, as long as both sides still agree.
    func testCollapseReturnCodeIsJudgedApartFromTheData() throws {
        let (ok, r) = try judge(.thp, .madvCollapse, FakeEventKernel(memory: .privateAnon))
        XCTAssertEqual(r.observations, ["event": "ok", "device_write": "seen", "cpu_write": "seen"])
        XCTAssertEqual(ok.kind, .pass, ok.reason)
        let k = FakeEventKernel(memory: .privateAnon)
        k.eventResult = "EAGAIN"
        let (v, _) = try judge(.thp, .madvCollapse, k)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("event: got EAGAIN, expected ok") && !v.reason.contains("PROMISE"), v.reason)
        let h = FakeEventKernel(memory: .shared)
        h.eventResult = "EINVAL"
        for kernel in [KernelVersion(6, 1), KernelVersion(6, 12), KernelVersion(7, 3)] {
            XCTAssertEqual(try judge(.hugetlb2M, .madvCollapse, h, kernel: kernel).0.kind, .pass, "hugetlb refuses MADV_COLLAPSE on \(kernel)")
        }
        let (notRefused, _) = try judge(.hugetlb2M, .madvCollapse, FakeEventKernel(memory: .shared))
        XCTAssertEqual(notRefused.kind, .fail, "a hugetlb vma that MADV_COLLAPSE accepts is not what the row says")
        // PTEs of a pinned THP: SCAN_PAGE_COUNT is EAGAIN on every kernel the VM runs (6.1.13 has ae63c898f400).
        let pte = FakeEventKernel(memory: .privateAnon)
        pte.eventResult = "EAGAIN"
        XCTAssertEqual(try judge(.thp, .madvCollapsePteMapped, pte, kernel: KernelVersion(6, 1)).0.kind, .pass)
        pte.eventResult = "EINVAL"
        XCTAssertEqual(try judge(.thp, .madvCollapsePteMapped, pte, kernel: KernelVersion(6, 1)).0.kind, .fail, "the errno before ae63c898f400")
    }

    /// A kernel that collapses or splits a pinned range by copying it gives the process new pages:
    /// the device's write is not seen and the process's write does not reach the device.
    func testACollapseOrSplitThatReplacesThePinnedPagesBreaksThePromise() throws {
        for e in [CaseEvent.madvCollapse, .thpSplit, .madvCollapsePteMapped] {
            let (v, r) = try judge(.thp, e, FakeEventKernel(memory: .privateAnon, bug: .collapseOrSplitReplacesPinnedPage))
            XCTAssertEqual(r.observations["device_write"], "stale", "\(e): the process reads its copy of the old content")
            XCTAssertEqual(r.observations["cpu_write"], "device-own", "\(e): the device still holds its own write")
            XCTAssertTrue(v.kind == .fail && v.reason.hasPrefix("PROMISE BROKEN: ") && v.reason.contains("kernel log:"), "\(e): \(v.reason)")
        }
        let (split, _) = try judge(.hugetlb2M, .thpSplit, FakeEventKernel(memory: .shared))
        XCTAssertEqual(split.kind, .pass, split.reason)
    }

    /// Every planned kind × {madv-collapse, thp-split} cell has exactly one row on each kernel the
    /// VM runs, so none is judged "no event expectation" or "ambiguous".
    func testEveryCollapseAndSplitCellHasOneRowPerKernel() throws {
        let cfg = try config()
        let cells = cfg.plan(backends: nil, kinds: nil, events: [.madvCollapse, .thpSplit, .madvCollapsePteMapped],
                             matrix: Matrix(backends: BackendKind.allCases, cases: []))
        XCTAssertEqual(cells.count, 2 * (9 + 9 + 1), "nine kinds × two events and the THP's PTE case, on type1v2 and iommufd")
        for c in cells {
            let rec = Runner.record(c, iova: 0, outcome: .ok)
            for kernel in [KernelVersion(6, 1), KernelVersion(6, 12), KernelVersion(7, 3)] {
                XCTAssertEqual(cfg.matching(rec, kernel: kernel).count, 1, "\(c.id) on \(kernel)")
            }
        }
    }

    // MARK: judging

    func row(_ yaml: String) throws -> EventConfig {
        try EventConfig.parse(try Yams.compose(yaml: "schema: 1\nexpectations:\n" + yaml)!, file: "t.yaml")
    }

    let promiseRow = """
      - kinds: [anon-private]
        events: [mremap]
        event: ok
        device_write: seen
        cpu_write: seen
        semantics: promise
        decided_by: move_page_tables
    """

    func testJudging() throws {
        let cfg = try row(promiseRow)
        var good = EventResult(); good.observations = ["event": "ok", "device_write": "seen", "cpu_write": "seen"]
        XCTAssertEqual(cfg.judge(record(.anonPrivate, .mremap, good), kernel: KernelVersion(6, 1)).kind, .pass)
        var bad = good; bad.observations["cpu_write"] = "device-own"
        var rec = record(.anonPrivate, .mremap, bad)
        rec.kernelLog = ["WARNING: CPU: 0 PID: 1 at mm/gup.c"]
        let v = cfg.judge(rec, kernel: KernelVersion(6, 1))
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("cpu_write: got device-own, expected seen") && v.reason.contains("mm/gup.c"), v.reason)
        var failedCheck = good; failedCheck.checks = [Check("device-wrote", false, "3 of 4")]
        XCTAssertEqual(cfg.judge(record(.anonPrivate, .mremap, failedCheck), kernel: KernelVersion(6, 1)).kind, .fail)
        XCTAssertEqual(cfg.judge(record(.anonPrivate, .madvFree, good), kernel: KernelVersion(6, 1)).kind, .fail, "no row")
        var skipped = record(.anonPrivate, .mremap, good); skipped.outcome = .skip("no NVMe")
        XCTAssertEqual(cfg.judge(skipped, kernel: KernelVersion(6, 1)).kind, .skip)
        let two = try row(promiseRow + "\n" + promiseRow)
        XCTAssertTrue(two.judge(record(.anonPrivate, .mremap, good), kernel: KernelVersion(6, 1)).reason.contains("ambiguous"))
        let bug = try row(promiseRow.replacingOccurrences(of: "cpu_write: seen", with: "cpu_write: device-own") + "\n    known_bug: https://example.org/bug")
        XCTAssertEqual(bug.judge(record(.anonPrivate, .mremap, bad), kernel: KernelVersion(6, 1)).kind, .xfail)
        XCTAssertEqual(bug.judge(record(.anonPrivate, .mremap, good), kernel: KernelVersion(6, 1)).kind, .fail, "a known bug that stops reproducing")
    }

    func testConfigRejections() throws {
        func rejects(_ yaml: String, _ problem: String, line: UInt = #line) {
            do { _ = try row(yaml); XCTFail("accepted: \(problem)", line: line) } catch let e as ConfigError {
                XCTAssertTrue(e.message.contains(problem) && e.message.contains("t.yaml:"), e.message, line: line)
            } catch { XCTFail("\(error)", line: line) }
        }
        rejects(promiseRow.replacingOccurrences(of: "cpu_write: seen", with: "cpu_write: zero"), "a promise means")
        rejects(promiseRow.replacingOccurrences(of: "    cpu_write: seen\n", with: ""), "need \"cpu_write\"")
        rejects(promiseRow.replacingOccurrences(of: "cpu_write: seen", with: "cpu_write: maybe"), "must be one of")
        rejects(promiseRow.replacingOccurrences(of: "[mremap]", with: "[teleport]"), "unknown event")
        rejects(promiseRow + "\n    child_sees: seen", "unknown key \"child_sees\"")
        rejects(promiseRow.replacingOccurrences(of: "semantics: promise", with: "semantics: hope"), "promise or documented")
        rejects(promiseRow.replacingOccurrences(of: "[anon-private]", with: "[iova-overlap]"), "argument edge")
        XCTAssertNoThrow(try config(), "configs/events.yaml itself loads")
    }

    // MARK: planning and knobs

    func testPlanIdsAreUniqueAndFiltered() throws {
        let cfg = try config()
        let m = Matrix(backends: BackendKind.allCases, cases: [])
        let all = cfg.plan(backends: nil, kinds: nil, events: nil, matrix: m)
        XCTAssertEqual(Set(all.map(\.id)).count, all.count)
        XCTAssertTrue(all.allSatisfy { $0.id.hasSuffix("+" + $0.event!.rawValue) })
        let narrow = cfg.plan(backends: [.type1], kinds: [.memfd], events: nil, matrix: m)
        XCTAssertTrue(!narrow.isEmpty && narrow.allSatisfy { $0.backend == .type1 && $0.kind == .memfd })
        XCTAssertTrue(cfg.plan(backends: nil, kinds: nil, events: nil, matrix: Matrix(backends: [.mdevMap], cases: [])).isEmpty,
                      "backends the matrix leaves out are left out")
    }

    func testAKnobLeftChangedIsPutBackAndReported() throws {
        let path = NSTemporaryDirectory() + "/knob-\(getpid())"
        try "65535\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let snap = [(path: path, value: "65535")]
        XCTAssertEqual(CaseKnobs.restore(snap), [], "unchanged: nothing to say")
        try "4\n".write(toFile: path, atomically: true, encoding: .utf8)
        let checks = CaseKnobs.restore(snap)
        XCTAssertEqual(checks.map(\.passed), [false])
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "65535")
    }
}
