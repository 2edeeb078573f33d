import XCTest
@testable import Exerciser

/// KTAP to LAVA test cases: every result kept, names distinct and readable, the run's own checks.
final class LAVASignalsTests: XCTestCase {
    func testOurKTAPBecomesOneCasePerResult() {
        let header = RunHeader(tool: "t", kernelRelease: "6.1.0", device: "edu", plan: [])
        func r(_ id: String, _ k: VerdictKind) -> CaseResult {
            CaseResult(record: CaseRecord(id: id, backend: "type1v2", kind: "x", phase: .device, size: 4096, flags: [], iova: 0, outcome: .ok),
                       verdict: Verdict(k, k == .skip ? "no /dev/iommu" : "why"))
        }
        let report = RunReport(header: header, results: [
            r("type1v2/anon-private", .pass), r("type1v2/bar/BAR0", .fail), r("iommufd/memfd-map-file@pre-device", .skip),
            r("iommufd-compat-type1/flags-none@device", .xfail),
        ])
        let ktap = Reporter.render(report, format: .ktap, color: false).replacingOccurrences(of: "\n", with: "\r\r\n")
        XCTAssertEqual(LAVASignals.cases(fromKTAP: ktap), [
            .init(name: "type1v2.anon-private", result: "pass"),
            .init(name: "type1v2.bar.BAR0", result: "fail"),
            .init(name: "iommufd.memfd-map-file_pre-device", result: "skip"),
            .init(name: "iommufd-compat-type1.flags-none_device", result: "pass"),
            .init(name: "ktap-plan", result: "pass"),
            .init(name: "ktap-incidents", result: "pass"),
        ], "console line ends (\\r\\r\\n) are no part of a name")
        XCTAssertEqual(LAVASignals.render(LAVASignals.cases(fromKTAP: ktap)).split(separator: "\n").first,
                       "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=type1v2.anon-private RESULT=pass>")
    }

    func testTheRunItselfCanFail() {
        let lost = "KTAP version 1\n1..3\nok 1 a\nnot ok 2 b\n# incident: console: Kernel panic - not syncing\n"
        let c = LAVASignals.cases(fromKTAP: lost)
        XCTAssertEqual(c.map(\.result), ["pass", "fail", "fail", "fail"], "two results of three planned, and an incident")
        XCTAssertEqual(LAVASignals.cases(fromKTAP: "").map(\.result), ["fail", "pass"], "no plan, no results: no pass")
        XCTAssertEqual(LAVASignals.cases(fromKTAP: "1..0 # SKIP no device\n").map(\.result), ["pass", "pass"])
    }

    func testKselftestRunnerOutputAndNestedLines() {
        let runner = """
        TAP version 13
        1..1
        # selftests: vfio-exerciser: run_vfio_exerciser.sh
        # KTAP version 1
        # 1..2
        # ok 1 type1v2/hole
        # not ok 2 type1v2/x
        ok 1 selftests: vfio-exerciser: run_vfio_exerciser.sh # SKIP
        """
        XCTAssertEqual(LAVASignals.cases(fromKTAP: runner), [
            .init(name: "selftests__vfio-exerciser__run_vfio_exerciser.sh", result: "skip"),
            .init(name: "ktap-plan", result: "pass"), .init(name: "ktap-incidents", result: "pass"),
        ], "only top-level results count")
        XCTAssertEqual(LAVASignals.cases(fromKTAP: "1..1\nnot ok 1 t # SKIP odd\n").first?.result, "fail", "not ok stays a failure")
    }

    func testNamesStayDistinct() {
        let ktap = "1..5\nok 1 a/b\nok 2 a.b\nok 3 a b\nok 4 \nok 5 ü\n"
        let names = LAVASignals.cases(fromKTAP: ktap).map(\.name)
        XCTAssertEqual(names, ["a.b", "a.b-2", "a_b", "case-4", "_", "ktap-plan", "ktap-incidents"])
        XCTAssertEqual(Set(names).count, names.count)
        for n in names { XCTAssertNil(n.range(of: "[^A-Za-z0-9._-]", options: .regularExpression), n) }
    }
}
