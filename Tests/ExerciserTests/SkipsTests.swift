import XCTest
import Yams
@testable import Exerciser

/// configs/skips.yaml: parsing, the strict verdict, and the real configs planned and judged for
/// every kernel CI boots.
final class SkipsTests: XCTestCase {
    static let iommufdBackends: [BackendKind] = [.iommufd, .iommufdCompatType1, .iommufdCompatType1v2]

    static func row(_ backends: [BackendKind]? = nil, kinds: [CaseKind]? = nil, kernel: String? = nil, release: String? = nil,
                    reason: String = "no /dev/iommu", line: String = "skips.yaml:5") -> ExpectedSkip {
        ExpectedSkip(line: line, kinds: kinds, backends: backends, kernel: kernel.map { try! KernelRange(parsing: $0) } ?? .any,
                     release: release, reason: reason, decidedBy: "CONFIG_IOMMUFD is not set")
    }

    static func rec(_ backend: BackendKind, _ kind: CaseKind = .anonPrivate, _ outcome: Outcome) -> CaseRecord {
        CaseRecord(id: "\(backend.rawValue)/\(kind.rawValue)", backend: backend.rawValue, kind: kind.rawValue, phase: .device,
                   size: 64 << 10, flags: ["read", "write"], iova: 0x100000, outcome: outcome, unmappedBytes: 64 << 10)
    }

    static let debian73 = "7.3.4+deb13-amd64", test73 = "7.3.4-vfiotest"
    static let skips = ExpectedSkips(rows: [row(iommufdBackends, kernel: ">=6.2", release: "*+deb*")])
    static let expectations = Expectations(rows: [
        Expectation(line: "exp.yaml:1", kinds: [.anonPrivate], backends: nil, phases: nil, flags: nil, kernel: .any,
                    outcome: "ok", decidedBy: "gup", unmapped: nil, accounted: nil, knownBug: nil),
    ])

    func verdict(_ r: CaseRecord, _ release: String, strict: Bool = true) -> Verdict {
        Judge(expectations: Self.expectations, strictSkips: strict ? Self.skips : nil).verdict(r, release: release)
    }

    // MARK: The strict verdict

    func testExpectedSkipStaysASkip() {
        let v = verdict(Self.rec(.iommufd, .anonPrivate, .skip("no /dev/iommu (kernel without CONFIG_IOMMUFD)")), Self.debian73)
        XCTAssertEqual(v.kind, .skip, v.reason)
        XCTAssertEqual(v.decidedBy, "CONFIG_IOMMUFD is not set")
    }

    func testUnexpectedSkipFailsNamingCaseAndReason() {
        // A kind that silently became unavailable: the hugetlb pool not reserved.
        let v = verdict(Self.rec(.type1v2, .hugetlb2M, .skip("no free 2M hugepages (0 free)")), Self.debian73)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("unexpected skip of type1v2/hugetlb-2M"), v.reason)
        XCTAssertTrue(v.reason.contains("no free 2M hugepages (0 free)"), v.reason)
        XCTAssertTrue(v.reason.contains(Self.debian73), v.reason)
    }

    func testSkipForAnotherReasonFails() {
        // iommufd is expected to skip on Debian for want of /dev/iommu, not because the device did not open.
        let v = verdict(Self.rec(.iommufd, .anonPrivate, .skip("device open failed: EBUSY")), Self.debian73)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("unexpected skip of iommufd/anon-private: device open failed: EBUSY"), v.reason)
        XCTAssertTrue(v.reason.contains("skips.yaml:5 expects it to skip with \"no /dev/iommu\""), v.reason)
    }

    func testExpectedSkipThatRanFails() {
        let v = verdict(Self.rec(.iommufd, .anonPrivate, .ok), Self.debian73)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("expected to skip (skips.yaml:5: no /dev/iommu) but it ran and got ok; update skips.yaml:5"), v.reason)
        // Its own expectation failing too: both are said.
        let e = verdict(Self.rec(.iommufd, .anonPrivate, .errno("EFAULT")), Self.debian73)
        XCTAssertEqual(e.kind, .fail)
        XCTAssertTrue(e.reason.contains("but it ran and got EFAULT") && e.reason.contains("got EFAULT, expected ok"), e.reason)
    }

    /// Same version, built differently: the release glob tells Debian's 7.3.4 from the test kernel's.
    func testReleaseGlobSeparatesKernelsOfOneVersion() {
        XCTAssertEqual(verdict(Self.rec(.iommufd, .anonPrivate, .ok), Self.test73).kind, .pass)
        XCTAssertEqual(verdict(Self.rec(.iommufd, .anonPrivate, .skip("no /dev/iommu")), Self.test73).kind, .fail)
        XCTAssertEqual(verdict(Self.rec(.iommufd, .anonPrivate, .skip("no /dev/iommu")), "6.1.0-50-amd64").kind, .fail,
                       "the row is >=6.2: a 6.1 skip needs its own row")
    }

    func testEventsNarrowARow() {
        var row = Self.row(nil, reason: "built without CONFIG_KSM")
        row.events = [.ksmMerge]
        var r = Self.rec(.type1v2, .anonPrivate, .skip("no /sys/kernel/mm/ksm: the kernel is built without CONFIG_KSM"))
        XCTAssertFalse(row.applies(r, KernelVersion(7, 3, 4), release: Self.test73), "a plain case is no event row's")
        r.event = CaseEvent.compact.rawValue
        XCTAssertFalse(row.applies(r, KernelVersion(7, 3, 4), release: Self.test73))
        r.event = CaseEvent.ksmMerge.rawValue
        XCTAssertTrue(row.applies(r, KernelVersion(7, 3, 4), release: Self.test73))
    }

    func testPhaseNarrowsARow() {
        let row = Self.row([.iommufd], kinds: [.iovaOutOfRange], reason: "no IOVA gap")
        var r = Self.rec(.iommufd, .iovaOutOfRange, .errno("EINVAL"))
        let v = KernelVersion(7, 3, 4)
        var narrowed = row
        narrowed.phases = [.preDevice]
        XCTAssertTrue(row.applies(r, v, release: Self.test73))
        XCTAssertFalse(narrowed.applies(r, v, release: Self.test73), "a device-phase case is not a pre-device row's")
        r.phase = .preDevice
        XCTAssertTrue(narrowed.applies(r, v, release: Self.test73))
    }

    func testNotStrictLeavesVerdictsAlone() {
        let skip = Self.rec(.type1v2, .hugetlb2M, .skip("no free 2M hugepages"))
        XCTAssertEqual(verdict(skip, Self.debian73, strict: false), Verdict(.skip, "no free 2M hugepages"))
        XCTAssertEqual(verdict(Self.rec(.iommufd, .anonPrivate, .ok), Self.debian73, strict: false).kind, .pass)
    }

    func testLostCaseStaysAFailure() {
        let v = verdict(Self.rec(.iommufd, .anonPrivate, .lost("guest panicked")), Self.debian73)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("case did not finish: guest panicked"), v.reason)
    }

    /// Through Judge.report: the report's exit code follows.
    func testReportExitCode() {
        let header = RunHeader(tool: "t", kernelRelease: Self.debian73, device: "d", plan: ["type1v2/hugetlb-2M", "iommufd/anon-private"])
        let records = [Self.rec(.type1v2, .hugetlb2M, .skip("no free 2M hugepages")), Self.rec(.iommufd, .anonPrivate, .skip("no /dev/iommu"))]
        XCTAssertEqual(Judge(expectations: Self.expectations).report(header: header, records: records).exitCode, 4)
        let strict = Judge(expectations: Self.expectations, strictSkips: Self.skips).report(header: header, records: records)
        XCTAssertEqual(strict.exitCode, 1)
        XCTAssertEqual(strict.results.map(\.verdict.kind), [.fail, .skip])
    }

    // MARK: Parsing

    func parse(_ yaml: String) throws(ConfigError) -> ExpectedSkips {
        guard let node = try? Yams.compose(yaml: yaml) else { throw ConfigError("test: not YAML") }
        return try ExpectedSkips.parse(node, file: "skips.yaml")
    }

    func testParsesARow() throws {
        let s = try parse("""
            schema: 1
            skips:
              - backends: [iommufd]
                kind: [anon-private, memfd]
                phases: [device]
                kernel: ">=6.2"
                release: "*+deb*"
                reason: no /dev/iommu
                decided_by: CONFIG_IOMMUFD
            """)
        XCTAssertEqual(s.rows, [ExpectedSkip(line: "skips.yaml:3", kinds: [.anonPrivate, .memfd], backends: [.iommufd], phases: [.device],
                                             kernel: try KernelRange(parsing: ">=6.2"),
                                             release: "*+deb*", reason: "no /dev/iommu", decidedBy: "CONFIG_IOMMUFD")])
    }

    func testRejectsWithFileAndLine() {
        let head = "schema: 1\nskips:\n  - reason: x\n    decided_by: y\n"
        let cases: [(String, String)] = [
            (head + "    kinds: [thp]\n", "skips.yaml:5: unknown key \"kinds\""),
            (head + "    kind: [thpp]\n", "skips.yaml:3: unknown region kind \"thpp\""),
            (head + "    backends: [type2]\n", "skips.yaml:3: unknown backend \"type2\""),
            (head + "    backends: [type1]\n    except_backends: [type1v2]\n", "skips.yaml:3: give backends or except_backends, not both"),
            (head + "    kernel: \"6.2\"\n", "skips.yaml:3: kernel range \"6.2\""),
            (head + "    release: \"\"\n", "skips.yaml:3: release must not be empty"),
            (head + "    phases: [post-device]\n", "skips.yaml:3: unknown phase \"post-device\""),
            ("schema: 1\nskips:\n  - decided_by: y\n", "skips.yaml:3: an expected skip needs \"reason\""),
            ("schema: 1\nskips:\n  - reason: x\n", "skips.yaml:3: an expected skip needs \"decided_by\""),
            ("schema: 1\nskips: {}\n", "skips.yaml:1: \"skips\" must be a list"),
            ("schema: 2\nskips: []\n", "schema 2 is not supported"),
            ("schema: 1\nskips: []\nexpectations: []\n", "skips.yaml:3: unknown key \"expectations\""),
        ]
        for (yaml, message) in cases {
            XCTAssertThrowsError(try parse(yaml), yaml) { e in
                XCTAssertTrue("\(e)".contains(message), "\(e) should contain \(message)")
            }
        }
    }

    // MARK: The real configs

    static var configs: String { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path + "/configs" }

    /// `uname -r` of the kernels .ci/run boots (debian:6.1, debian:6.12, debian:7.3, test:7.3).
    static let ciKernels = ["6.1.0-50-amd64", "6.12.117+deb13-amd64", "7.3.4+deb13-amd64", "7.3.4-vfiotest"]

    /// Every case the real matrix plans, on every CI kernel, is matched by exactly one row of the
    /// real expectations — or is expected to skip there (then by at most one). An ambiguous or
    /// missing row fails here in seconds, not in a VM run.
    func testRealMatrixJudgedForEveryCIKernel() throws {
        let m = try Matrix.load(Self.configs + "/matrix.yaml")
        let e = try Expectations.load(Self.configs + "/expectations.yaml")
        let s = try ExpectedSkips.load(Self.configs + "/skips.yaml")
        let ev = try EventConfig.load(Self.configs + "/events.yaml")
        let plan = Planner.plan(m, backends: nil, kinds: nil, bars: ["BAR0"])
        XCTAssertGreaterThan(plan.count, 200, "the real matrix plans \(plan.count) cases")
        // Each boot of matrix.yaml too: its kinds, judged with its parameters.
        let boots = [(BootParams.none, plan, ev.plan(backends: nil, kinds: nil, events: nil, matrix: m))] + m.boots.map { b in
            (BootParams(cmdline: b.append.joined(separator: " ")), Planner.plan(m, backends: nil, kinds: b.kinds, bars: ["BAR0"]),
             ev.plan(backends: nil, kinds: b.kinds, events: nil, matrix: m))
        }
        var problems: [String] = []
        var used = Set<String>()
        for release in Self.ciKernels {
            for (boot, plan, events) in boots {
                let v = try XCTUnwrap(KernelVersion(release: release))
                var judged = 0
                for c in plan {
                    let r = Runner.record(c, iova: 0, outcome: .ok)
                    let rows = e.matching(r, kernel: v, boot: boot).map(\.line)
                    let skips = s.rows.filter { $0.applies(r, v, release: release, boot: boot) }
                    used.formUnion(skips.map(\.line))
                    if skips.isEmpty {
                        judged += 1
                        if rows.count != 1 { problems.append("\(release) \(c.id): \(rows.isEmpty ? "no expectation row" : "rows \(rows.joined(separator: ", ")) all match")") }
                    } else if rows.count > 1 {
                        problems.append("\(release) \(c.id) (expected to skip): rows \(rows.joined(separator: ", ")) all match")
                    }
                }
                XCTAssertGreaterThan(judged, 0, "\(release): every case is expected to skip")
                // The kind × event cases: one row of events.yaml each, unless expected to skip.
                for c in events {
                    let r = Runner.record(c, iova: 0, outcome: .ok)
                    let skips = s.rows.filter { $0.applies(r, v, release: release) }
                    used.formUnion(skips.map(\.line))
                    let rows = ev.matching(r, kernel: v, boot: boot).map(\.line)
                    if skips.isEmpty && rows.count != 1 || rows.count > 1 {
                        problems.append("\(release) \(boot) \(c.id): \(rows.isEmpty ? "no event row" : "event rows \(rows.joined(separator: ", ")) all match")")
                    }
                }
            }
        }
        XCTAssertEqual(problems, [])
        // A row that applies to no planned case on any CI kernel is dead (or mistyped).
        XCTAssertEqual(s.rows.map(\.line).filter { !used.contains($0) }, [], "skips.yaml rows that apply to nothing")
    }
}
