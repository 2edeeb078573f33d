import XCTest
import Yams
@testable import Exerciser

/// Expectations.judge, kernel ranges and exit codes: the pure core every report is built on.
final class VerdictTests: XCTestCase {
    static func row(_ kinds: [CaseKind], _ outcome: String, kernel: String? = nil, backends: [BackendKind]? = nil,
                    phases: [Phase]? = nil, flags: [String]? = nil, unmapped: ByteExpectation? = nil,
                    bug: KnownBug? = nil, line: String = "exp.yaml:1", decidedBy: String = "decider") -> Expectation {
        Expectation(line: line, kinds: kinds, backends: backends, phases: phases, flags: flags,
                    kernel: kernel.map { try! KernelRange(parsing: $0) } ?? .any, outcome: outcome,
                    decidedBy: decidedBy, unmapped: unmapped, knownBug: bug)
    }

    static func rec(_ kind: CaseKind = .anonPrivate, _ outcome: Outcome, backend: BackendKind = .type1, phase: Phase = .device,
                    flags: [String] = ["read", "write"], size: UInt64 = 64 << 10, unmapped: UInt64? = 64 << 10,
                    cleanupOK: Bool = true, checks: [Check] = []) -> CaseRecord {
        CaseRecord(id: "\(backend.rawValue)/\(kind.rawValue)", backend: backend.rawValue, kind: kind.rawValue, phase: phase,
                   size: size, flags: flags, iova: 0x100000, outcome: outcome, unmappedBytes: unmapped,
                   cleanupOK: cleanupOK, checks: checks)
    }

    static let k66 = KernelVersion(6, 6, 0)

    // MARK: Versions and ranges

    func testKernelReleaseParsing() {
        XCTAssertEqual(KernelVersion(release: "6.1.0-40-amd64"), KernelVersion(6, 1, 0))
        XCTAssertEqual(KernelVersion(release: "6.12.57+deb13-amd64"), KernelVersion(6, 12, 57))
        XCTAssertEqual(KernelVersion(release: "7.3.0-1-amd64"), KernelVersion(7, 3, 0))
        XCTAssertEqual(KernelVersion(release: "6.5-rc1"), KernelVersion(6, 5, 0))
        XCTAssertEqual(KernelVersion(release: "7.3"), KernelVersion(7, 3, 0))
        XCTAssertNil(KernelVersion(release: "six"))
        XCTAssertNil(KernelVersion(release: "6"))
        XCTAssertTrue(KernelVersion(6, 4, 99) < KernelVersion(6, 5, 0))
        XCTAssertTrue(KernelVersion(6, 9, 0) < KernelVersion(6, 12, 0), "numeric, not lexical, comparison")
    }

    func testKernelRangeBoundaries() throws {
        let lt = try KernelRange(parsing: "<6.5")
        let ge = try KernelRange(parsing: ">=6.5")
        let v6_4_99 = KernelVersion(6, 4, 99), v6_5_0 = KernelVersion(6, 5, 0), v6_5_1 = KernelVersion(6, 5, 1)
        XCTAssertTrue(lt.contains(v6_4_99))
        XCTAssertFalse(lt.contains(v6_5_0))
        XCTAssertFalse(lt.contains(v6_5_1))
        XCTAssertFalse(ge.contains(v6_4_99))
        XCTAssertTrue(ge.contains(v6_5_0))
        XCTAssertTrue(ge.contains(v6_5_1))
        // The two halves partition the line: exactly one holds for every version.
        for v in [v6_4_99, v6_5_0, v6_5_1, KernelVersion(5, 10), KernelVersion(7, 0)] {
            XCTAssertNotEqual(lt.contains(v), ge.contains(v), "\(v)")
        }
        let both = try KernelRange(parsing: ">=5.18, <6.5")
        XCTAssertEqual(both.bounds.count, 2)
        XCTAssertFalse(both.contains(KernelVersion(5, 17, 99)))
        XCTAssertTrue(both.contains(KernelVersion(5, 18)))
        XCTAssertFalse(both.contains(v6_5_0))
        XCTAssertTrue(try KernelRange(parsing: ">6.5").contains(v6_5_1))
        XCTAssertFalse(try KernelRange(parsing: ">6.5").contains(v6_5_0))
        XCTAssertTrue(try KernelRange(parsing: "<=6.5").contains(v6_5_0))
        XCTAssertFalse(try KernelRange(parsing: "<=6.5").contains(v6_5_1))
        XCTAssertTrue(try KernelRange(parsing: "==6.5.1").contains(v6_5_1))
        XCTAssertFalse(try KernelRange(parsing: "==6.5.1").contains(v6_5_0))
        XCTAssertTrue(KernelRange.any.contains(v6_5_0))
        XCTAssertEqual(both.description, ">=5.18.0,<6.5.0")
    }

    func testKernelRangeRejects() {
        for bad in [">=six", "", "6.5", "=>6.5", ">=", "<6.5, x"] {
            XCTAssertThrowsError(try KernelRange(parsing: bad), "\"\(bad)\" must not parse") { e in
                XCTAssertTrue(e is ConfigError, "\(e)")
            }
        }
    }

    /// One kind, two rows split at 6.5; releases as `uname -r` writes them pick the row.
    func testJudgeAcrossVersions() {
        let e = Expectations(rows: [
            Self.row([.hole], "EFAULT", kernel: "<6.5", line: "exp.yaml:10", decidedBy: "old_path"),
            Self.row([.hole], "EINVAL", kernel: ">=6.5", line: "exp.yaml:20", decidedBy: "new_path"),
        ])
        let efault = Self.rec(.hole, .errno("EFAULT"), unmapped: nil)
        let einval = Self.rec(.hole, .errno("EINVAL"), unmapped: nil)
        func v(_ release: String) -> KernelVersion { KernelVersion(release: release)! }

        for (release, want) in [("6.1.0-40-amd64", "EFAULT"), ("6.12.57+deb13-amd64", "EINVAL"),
                                ("7.3.0-1-amd64", "EINVAL"), ("6.5-rc1", "EINVAL")] {
            let good = want == "EFAULT" ? efault : einval
            let bad = want == "EFAULT" ? einval : efault
            let pass = e.judge(good, kernel: v(release))
            XCTAssertEqual(pass.kind, .pass, "\(release): \(pass.reason)")
            XCTAssertEqual(pass.expected, want, release)
            XCTAssertEqual(pass.decidedBy, want == "EFAULT" ? "old_path" : "new_path", release)
            let fail = e.judge(bad, kernel: v(release))
            XCTAssertEqual(fail.kind, .fail, release)
            XCTAssertEqual(fail.expected, want, release)
        }
        XCTAssertEqual(e.judge(efault, kernel: KernelVersion(6, 4, 99)).kind, .pass)
        XCTAssertEqual(e.judge(efault, kernel: KernelVersion(6, 5, 0)).kind, .fail)
        XCTAssertEqual(e.judge(einval, kernel: KernelVersion(6, 5, 0)).kind, .pass)
        XCTAssertEqual(e.judge(einval, kernel: KernelVersion(6, 5, 1)).kind, .pass)
    }

    // MARK: Verdicts

    func testPass() {
        let e = Expectations(rows: [Self.row([.anonPrivate], "ok", unmapped: .mappedSize, decidedBy: "vfio_pin_pages_remote")])
        let v = e.judge(Self.rec(.anonPrivate, .ok), kernel: Self.k66)
        XCTAssertEqual(v.kind, .pass, v.reason)
        XCTAssertEqual(v.expected, "ok")
        XCTAssertEqual(v.decidedBy, "vfio_pin_pages_remote")
        XCTAssertNil(v.reference)
    }

    func testFailOnWrongOutcome() {
        let e = Expectations(rows: [Self.row([.protNone], "EFAULT")])
        let v = e.judge(Self.rec(.protNone, .errno("ENOMEM"), unmapped: nil), kernel: Self.k66)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("got ENOMEM, expected EFAULT"), v.reason)
        XCTAssertEqual(v.expected, "EFAULT")
        // ok where an error was expected is a failure too.
        XCTAssertEqual(e.judge(Self.rec(.protNone, .ok), kernel: Self.k66).kind, .fail)
    }

    func testSkipPassesThrough() {
        // Even with no expectation, and even with a row that would fail it.
        for e in [Expectations(rows: []), Expectations(rows: [Self.row([.hugetlb1G], "ok")])] {
            let v = e.judge(Self.rec(.hugetlb1G, .skip("no 1G hugepages reserved")), kernel: Self.k66)
            XCTAssertEqual(v.kind, .skip)
            XCTAssertEqual(v.reason, "no 1G hugepages reserved")
        }
    }

    func testLostIsFail() {
        let e = Expectations(rows: [Self.row([.anonPrivate], "ok")])
        let v = e.judge(Self.rec(.anonPrivate, .lost("guest timed out")), kernel: Self.k66)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("guest timed out"), v.reason)
    }

    func testNoExpectation() {
        let e = Expectations(rows: [
            Self.row([.memfd], "ok"),
            Self.row([.anonPrivate], "ok", kernel: "<5.0"),              // wrong kernel
            Self.row([.anonPrivate], "ok", backends: [.type1v2]),        // wrong backend
            Self.row([.anonPrivate], "ok", phases: [.preDevice]),        // wrong phase
            Self.row([.anonPrivate], "ok", flags: ["read"]),             // wrong flags
        ])
        let v = e.judge(Self.rec(.anonPrivate, .ok, backend: .type1, phase: .device), kernel: Self.k66)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("no expectation"), v.reason)
        XCTAssertTrue(v.reason.contains("type1/anon-private"), v.reason)
        // Each filter admits the record once it fits.
        XCTAssertEqual(e.judge(Self.rec(.anonPrivate, .ok, backend: .type1v2), kernel: Self.k66).kind, .pass)
        XCTAssertEqual(e.judge(Self.rec(.anonPrivate, .ok, phase: .preDevice), kernel: Self.k66).kind, .pass)
        XCTAssertEqual(e.judge(Self.rec(.anonPrivate, .ok, flags: ["read"]), kernel: Self.k66).kind, .pass)
        XCTAssertEqual(e.judge(Self.rec(.anonPrivate, .ok), kernel: KernelVersion(4, 19)).kind, .pass)
    }

    func testFlagsMatchAsASet() {
        let e = Expectations(rows: [Self.row([.anonPrivate], "ok", flags: ["write", "read"])])
        XCTAssertEqual(e.judge(Self.rec(.anonPrivate, .ok, flags: ["read", "write"]), kernel: Self.k66).kind, .pass)
    }

    func testExceptBackendsLeavesThoseToAnotherRow() throws {
        var everywhere = Self.row([.hole], "EFAULT", line: "exp.yaml:2")
        everywhere.exceptBackends = [.mdevMap]
        let mdev = Self.row([.hole], "ok", backends: [.mdevMap], line: "exp.yaml:7")
        let e = Expectations(rows: [everywhere, mdev])
        XCTAssertEqual(e.judge(Self.rec(.hole, .errno("EFAULT"), backend: .type1v2, unmapped: nil), kernel: Self.k66).kind, .pass)
        XCTAssertEqual(e.judge(Self.rec(.hole, .ok, backend: .mdevMap), kernel: Self.k66).kind, .pass,
                       "the mdev-map case matches only its own row, not the excepted one")
        XCTAssertEqual(e.judge(Self.rec(.hole, .errno("EFAULT"), backend: .mdevMap, unmapped: nil), kernel: Self.k66).kind, .fail)
        // Both keys on one row is a configuration error.
        let yaml = "schema: 1\nexpectations:\n  - kind: hole\n    backends: [type1]\n    except_backends: [mdev-map]\n    outcome: EFAULT\n    decided_by: x\n"
        XCTAssertThrowsError(try Expectations.parse(try XCTUnwrap(Yams.compose(yaml: yaml)), file: "e.yaml")) { err in
            XCTAssertEqual("\(err)", "e.yaml:3: give backends or except_backends, not both")
        }
    }

    func testAmbiguous() {
        let e = Expectations(rows: [
            Self.row([.hole, .protNone], "EFAULT", line: "exp.yaml:3"),
            Self.row([.hole], "EFAULT", kernel: ">=6.0", line: "exp.yaml:9"),
        ])
        let v = e.judge(Self.rec(.hole, .errno("EFAULT"), unmapped: nil), kernel: Self.k66)
        XCTAssertEqual(v.kind, .fail, "two matching rows are a config error even when both agree")
        XCTAssertTrue(v.reason.contains("ambiguous"), v.reason)
        XCTAssertTrue(v.reason.contains("exp.yaml:3") && v.reason.contains("exp.yaml:9"), v.reason)
        // Outside the second row's range only the first matches.
        XCTAssertEqual(e.judge(Self.rec(.hole, .errno("EFAULT"), unmapped: nil), kernel: KernelVersion(5, 15)).kind, .pass)
    }

    func testKnownBugReproducedIsXfail() {
        let bug = KnownBug(reference: "https://lore.kernel.org/bug", fixedOutcome: "EFAULT")
        let e = Expectations(rows: [Self.row([.fsFile], "ok", bug: bug, decidedBy: "pin_user_pages")])
        let v = e.judge(Self.rec(.fsFile, .ok), kernel: Self.k66)
        XCTAssertEqual(v.kind, .xfail, v.reason)
        XCTAssertEqual(v.reference, "https://lore.kernel.org/bug")
        XCTAssertTrue(v.reason.contains("https://lore.kernel.org/bug"), v.reason)
        XCTAssertEqual(v.expected, "ok")
        XCTAssertEqual(v.decidedBy, "pin_user_pages")
    }

    func testKnownBugNoLongerReproducesIsFail() {
        let bug = KnownBug(reference: "https://lore.kernel.org/bug", fixedOutcome: "EFAULT")
        let e = Expectations(rows: [Self.row([.fsFile], "ok", bug: bug, line: "exp.yaml:42")])
        let v = e.judge(Self.rec(.fsFile, .errno("EFAULT"), unmapped: nil), kernel: Self.k66)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("no longer reproduces"), v.reason)
        XCTAssertTrue(v.reason.contains("exp.yaml:42"), "names the row to update: \(v.reason)")
        XCTAssertEqual(v.reference, "https://lore.kernel.org/bug")
    }

    func testFailedCheckFailsEvenWhenOutcomeMatches() {
        let e = Expectations(rows: [Self.row([.memfd], "ok")])
        let checks = [Check("mapped", true, "fine"), Check("readback", false, "device read 0x00, wrote 0xa5")]
        let v = e.judge(Self.rec(.memfd, .ok, checks: checks), kernel: Self.k66)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("readback: device read 0x00, wrote 0xa5"), v.reason)
        XCTAssertFalse(v.reason.contains("mapped"), "passed checks are not reported: \(v.reason)")
        XCTAssertEqual(e.judge(Self.rec(.memfd, .ok, checks: [Check("mapped", true, "")]), kernel: Self.k66).kind, .pass)
        // A failed check also overrides a reproduced known bug.
        let xe = Expectations(rows: [Self.row([.memfd], "ok", bug: KnownBug(reference: "r", fixedOutcome: nil))])
        XCTAssertEqual(xe.judge(Self.rec(.memfd, .ok, checks: checks), kernel: Self.k66).kind, .fail)
    }

    func testUnmappedBytes() {
        let size: UInt64 = 64 << 10
        let whole = Expectations(rows: [Self.row([.anonPrivate], "ok", unmapped: .mappedSize)])
        XCTAssertEqual(whole.judge(Self.rec(.anonPrivate, .ok, size: size, unmapped: size), kernel: Self.k66).kind, .pass)
        let half = whole.judge(Self.rec(.anonPrivate, .ok, size: size, unmapped: size / 2), kernel: Self.k66)
        XCTAssertEqual(half.kind, .fail)
        XCTAssertTrue(half.reason.contains("unmap reported 32768, expected 65536"), half.reason)
        let none = whole.judge(Self.rec(.anonPrivate, .ok, unmapped: nil), kernel: Self.k66)
        XCTAssertEqual(none.kind, .fail)
        XCTAssertTrue(none.reason.contains("nothing"), none.reason)

        let sub = Expectations(rows: [Self.row([.unmapSubrange], "ok", unmapped: .bytes(32 << 10))])
        XCTAssertEqual(sub.judge(Self.rec(.unmapSubrange, .ok, unmapped: 32 << 10), kernel: Self.k66).kind, .pass)
        XCTAssertEqual(sub.judge(Self.rec(.unmapSubrange, .ok, unmapped: 64 << 10), kernel: Self.k66).kind, .fail)
        // No unmapped expectation: an ok map must unmap exactly its size.
        let free = Expectations(rows: [Self.row([.anonPrivate], "ok")])
        XCTAssertEqual(free.judge(Self.rec(.anonPrivate, .ok, size: size, unmapped: 1), kernel: Self.k66).kind, .fail)
        XCTAssertEqual(free.judge(Self.rec(.anonPrivate, .ok, size: size, unmapped: size), kernel: Self.k66).kind, .pass)
        // A refused map has nothing to unmap: the count is not judged.
        let refused = Expectations(rows: [Self.row([.hole], "EFAULT")])
        XCTAssertEqual(refused.judge(Self.rec(.hole, .errno("EFAULT"), unmapped: nil), kernel: Self.k66).kind, .pass)
    }

    func testAccountedBytes() {
        let size: UInt64 = 64 << 10
        var row = Self.row([.anonPrivate], "ok")
        row.accounted = .mappedSize
        let e = Expectations(rows: [row])
        var r = Self.rec(.anonPrivate, .ok, size: size, unmapped: size)
        r.accountedBytes = Int64(size)
        XCTAssertEqual(e.judge(r, kernel: Self.k66).kind, .pass)
        r.accountedBytes = 0
        let v = e.judge(r, kernel: Self.k66)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("charged 0 bytes"), v.reason)
        row.accounted = .bytes(0)
        XCTAssertEqual(Expectations(rows: [row]).judge(r, kernel: Self.k66).kind, .pass)
    }

    func testCleanupFailure() {
        let e = Expectations(rows: [Self.row([.anonPrivate], "ok")])
        let v = e.judge(Self.rec(.anonPrivate, .ok, cleanupOK: false), kernel: Self.k66)
        XCTAssertEqual(v.kind, .fail)
        XCTAssertTrue(v.reason.contains("clean-up failed"), v.reason)
        let errRow = Expectations(rows: [Self.row([.hole], "EFAULT")])
        XCTAssertEqual(errRow.judge(Self.rec(.hole, .errno("EFAULT"), unmapped: nil, cleanupOK: false), kernel: Self.k66).kind, .fail)
    }

    // MARK: Exit codes

    func report(_ kinds: [VerdictKind], incidents: [String] = []) -> RunReport {
        let results = kinds.enumerated().map { i, k in
            CaseResult(record: Self.rec(.anonPrivate, k == .skip ? .skip("s") : .ok), verdict: Verdict(k, "r\(i)"))
        }
        return RunReport(header: RunHeader(tool: "t", kernelRelease: "6.6.0", device: "d", plan: []), results: results,
                         incidents: incidents)
    }

    func testExitCodes() {
        XCTAssertEqual(report([.pass, .pass]).exitCode, 0)
        XCTAssertEqual(report([.pass, .xfail]).exitCode, 0, "xfail counts as pass")
        XCTAssertEqual(report([.xfail]).exitCode, 0)
        XCTAssertEqual(report([.pass, .skip]).exitCode, 0)
        XCTAssertEqual(report([.pass, .fail, .skip]).exitCode, 1)
        XCTAssertEqual(report([.fail]).exitCode, 1)
        XCTAssertEqual(report([.pass], incidents: ["guest panic"]).exitCode, 1, "an incident fails the run")
        XCTAssertEqual(report([.skip], incidents: ["guest panic"]).exitCode, 1)
        XCTAssertEqual(report([.skip, .skip]).exitCode, 4, "all skipped")
        XCTAssertEqual(report([.skip, .xfail]).exitCode, 0)
    }
}
