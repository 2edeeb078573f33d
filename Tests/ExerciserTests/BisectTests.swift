import Foundation
import XCTest
@testable import Exerciser

/// The bisect exit codes: a kernel verdict is 0 or 1; anything that kept the kernel from being
/// tested is 125, so `git bisect run` skips the commit instead of blaming it.
final class BisectTests: XCTestCase {
    func report(_ verdicts: [VerdictKind], incidents: [String] = []) -> RunReport {
        RunReport(header: RunHeader(tool: "t", kernelRelease: "7.3.4", device: "d", plan: []),
                  results: verdicts.enumerated().map { i, v in
                      CaseResult(record: CaseRecord(id: "c\(i)", backend: "type1v2", kind: "anon-private", phase: .device, size: 0,
                                                    flags: [], iova: 0, outcome: .ok), verdict: Verdict(v, "r"))
                  }, incidents: incidents)
    }

    func testKernelVerdicts() {
        XCTAssertEqual(Bisect.exitCode(report: report([.pass, .pass, .xfail, .skip]), error: nil), 0)
        XCTAssertEqual(Bisect.exitCode(report: report([.pass, .fail]), error: nil), 1)
        XCTAssertEqual(Bisect.exitCode(report: report([.pass], incidents: ["console: Kernel panic - not syncing"]), error: nil), 1)
    }

    func testEveryInfrastructureFailureIsUntestable() {
        // Build failure, boot failure, no results, fetch failure: all reach the command as errors.
        for e in [UsageError("building the initramfs failed"), UsageError("the guest produced no results"),
                  UsageError("fetching debian:9.9 failed")] as [Error] {
            XCTAssertEqual(Bisect.exitCode(report: nil, error: e), 125, "\(e)")
        }
        XCTAssertEqual(Bisect.exitCode(report: report([]), error: nil), 125)
        XCTAssertEqual(Bisect.exitCode(report: report([.skip, .skip]), error: nil), 125)
        XCTAssertEqual(Bisect.exitCode(report: nil, error: nil), 125)
    }
}
