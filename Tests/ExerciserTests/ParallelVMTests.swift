import Foundation
import XCTest
@testable import Exerciser

/// `vm` on several kernels: the combined summary and exit code, the job pool, the progress board.
final class ParallelVMTests: XCTestCase {
    func result(_ id: String, _ kind: VerdictKind, outcome: Outcome = .ok) -> CaseResult {
        CaseResult(record: CaseRecord(id: id, backend: "type1v2", kind: String(id.split(separator: "/").last!), phase: .device,
                                      size: 4096, flags: ["read", "write"], iova: 0, outcome: outcome),
                   verdict: Verdict(kind, kind == .fail ? "got ok, expected EFAULT" : "as expected"))
    }

    func run(_ kernel: String, _ results: [CaseResult], incidents: [String] = []) -> KernelRun {
        let r = RunReport(header: RunHeader(tool: toolVersion, kernelRelease: kernel + "-rel", device: "edu", plan: results.map(\.record.id)),
                          results: results, incidents: incidents)
        return KernelRun(kernel: kernel, result: .report(r, seconds: 30, outDir: "out/" + kernel))
    }

    /// The incidents the harness itself gives a guest it had to kill at the timeout.
    func timeoutIncidents() -> [String] {
        let h = VMHarness(config: .init(cacheDir: "/c", outDir: "/o", scriptsDir: "/s", configsDir: "/cfg", guestBinary: "/b")) { _ in }
        return h.incidents(.init(console: "[ 1.0] Run /init as init process\n", results: "", consolePath: "/o/console.log",
                                 seconds: 360, timedOut: true, qemuStatus: 0))
    }

    func testOneKernelFailingAndOneTimingOutFailTheWhole() {
        let passing = run("debian:6.1", [result("type1v2/anon-private", .pass), result("type1v2/hole", .pass)])
        let failing = run("debian:6.12", [result("type1v2/anon-private", .fail), result("type1v2/hole", .pass)])
        let timedOut = run("debian:7.3", [result("type1v2/anon-private", .pass), result("type1v2/hole", .fail, outcome: .lost("guest killed"))],
                           incidents: timeoutIncidents())
        XCTAssertEqual(timeoutIncidents(), ["guest killed after 360 s (timeout)"])
        XCTAssertEqual(VMSummary.exitCode([passing, failing, timedOut]), 1)
        XCTAssertEqual(VMSummary.exitCode([passing, timedOut]), 1, "a timeout alone fails the whole")
        XCTAssertEqual(VMSummary.exitCode([failing, passing]), 1, "a failure alone fails the whole")
        // A timed-out guest whose finished cases all passed is still a failure: the incident.
        let quietTimeout = run("debian:7.3", [result("type1v2/anon-private", .pass)], incidents: timeoutIncidents())
        XCTAssertEqual(VMSummary.exitCode([passing, quietTimeout]), 1)

        let lines = VMSummary.lines([passing, failing, timedOut], wallSeconds: 61.4)
        XCTAssertEqual(lines.count, 4)
        XCTAssertEqual(lines[0], "debian:6.1: debian:6.1-rel — 2 passed, 0 failed, 0 skipped, 0 xfail; QEMU start to verdict 30.0 s; reports in out/debian:6.1")
        XCTAssertTrue(lines[1].hasPrefix("debian:6.12: debian:6.12-rel — 1 passed, 1 failed,"), lines[1])
        XCTAssertTrue(lines[2].hasSuffix("; 1 incident: guest killed after 360 s (timeout)"), lines[2])
        XCTAssertEqual(lines[3], "3 kernels: failed: debian:6.12, debian:7.3; 61 s in all; exit 1")
    }

    func testExitCodeOrder() {
        let pass = run("a", [result("type1v2/anon-private", .pass)])
        let skip = run("b", [result("type1v2/x", .skip)])
        let notRun = KernelRun(kernel: "c", result: .error("fetching debian:9.9 failed: no such package"))
        let fail = run("d", [result("type1v2/x", .fail)])
        XCTAssertEqual(VMSummary.exitCode([pass, pass]), 0)
        XCTAssertEqual(VMSummary.exitCode([pass, skip]), 0, "skips beside passes: a pass")
        XCTAssertEqual(VMSummary.exitCode([skip, skip]), 4, "all skipped: 4")
        XCTAssertEqual(VMSummary.exitCode([pass, notRun]), 2, "a kernel that could not run is not a pass")
        XCTAssertEqual(VMSummary.exitCode([notRun, fail]), 1, "a failure outranks a kernel that could not run")
        XCTAssertEqual(VMSummary.exitCode([]), 1, "no kernel at all is no pass")
        XCTAssertEqual(VMSummary.exitCode([run("e", [])]), 1, "a guest with no results is no pass")
        XCTAssertEqual(VMSummary.lines([pass, notRun]).last, "2 kernels: not run: c; exit 2")
        XCTAssertEqual(VMSummary.lines([pass, notRun])[1], "c: not run: fetching debian:9.9 failed: no such package")
        XCTAssertEqual(VMSummary.lines([pass]).count, 1, "one kernel: no total line")
    }

    func testJobPoolRunsAtMostJobsAtOnceAndKeepsOrder() {
        final class Counter: @unchecked Sendable {
            let lock = NSLock()
            var now = 0, peak = 0
            func enter() { lock.withLock { now += 1; peak = max(peak, now) } }
            func leave() { lock.withLock { now -= 1 } }
        }
        for jobs in [1, 2, 3] {
            let c = Counter()
            let out = JobPool.run(count: 7, jobs: jobs) { i -> Int in
                c.enter()
                Thread.sleep(forTimeInterval: 0.01 * Double(7 - i))  // later jobs finish first
                c.leave()
                return i * 10
            }
            XCTAssertEqual(out, [0, 10, 20, 30, 40, 50, 60])
            XCTAssertEqual(c.peak, jobs, "jobs=\(jobs)")
        }
        XCTAssertEqual(JobPool.run(count: 0, jobs: 2) { $0 }, [])
    }

    func testProgressBoardRedrawsOneLinePerKernel() {
        var screen: [String] = []
        let b = ProgressBoard(kernels: ["debian:6.1", "test:7.3"]) { screen.append($0) }
        b.update("debian:6.1", "debian:6.1: case 3/131 (9 s)")
        XCTAssertEqual(screen.last, "\r\u{1b}[Kdebian:6.1: case 3/131 (9 s)\n\u{1b}[Ktest:7.3: waiting")
        b.update("test:7.3", "building initramfs")
        XCTAssertEqual(screen.last, "\r\u{1b}[1A\u{1b}[Kdebian:6.1: case 3/131 (9 s)\n\u{1b}[Ktest:7.3: building initramfs",
                       "the second frame goes back up over the first")
        b.clear()
        XCTAssertEqual(screen.last, "\r\u{1b}[1A\u{1b}[J")
        let one = ProgressBoard(kernels: ["debian:6.1"]) { screen.append($0) }
        one.update("debian:6.1", "booting debian:6.1 (3 s)")
        one.update("debian:6.1", "booting debian:6.1 (4 s)")
        XCTAssertEqual(screen.last, "\r\u{1b}[Kdebian:6.1: booting debian:6.1 (4 s)", "one kernel: one line, no cursor moves")
    }
}
