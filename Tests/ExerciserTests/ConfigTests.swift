import XCTest
import Yams
@testable import Exerciser

/// configs/*.yaml parsing: good input, and every kind of bad input named with file:line.
final class ConfigTests: XCTestCase {
    static let file = "test.yaml"

    func node(_ yaml: String, file: StaticString = #filePath, line: UInt = #line) throws -> Node {
        guard let n = try Yams.compose(yaml: yaml) else {
            XCTFail("empty YAML", file: file, line: line)
            throw ConfigError("empty")
        }
        return n
    }

    /// Parsing must throw a ConfigError naming `problem` and the location `test.yaml:<at>`.
    func assertRejects(_ yaml: String, _ parse: (Node) throws(ConfigError) -> Void, problem: String, at yamlLine: Int,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let n = try node(yaml, file: file, line: line)
        do throws(ConfigError) {
            try parse(n)
            XCTFail("accepted bad input (expected: \(problem)):\n\(yaml)", file: file, line: line)
        } catch {
            XCTAssertTrue(error.message.contains(problem), "message \"\(error.message)\" should name \(problem)", file: file, line: line)
            XCTAssertTrue(error.message.contains("\(Self.file):\(yamlLine)"),
                          "message \"\(error.message)\" should contain \(Self.file):\(yamlLine)", file: file, line: line)
        }
    }

    let matrix: (Node) throws(ConfigError) -> Void = { (n: Node) throws(ConfigError) in _ = try Matrix.parse(n, file: ConfigTests.file) }
    let expectations: (Node) throws(ConfigError) -> Void = { (n: Node) throws(ConfigError) in
        _ = try Expectations.parse(n, file: ConfigTests.file)
    }

    // MARK: Matrix

    func testMatrixGood() throws {
        let yaml = """
        schema: 1
        backends: [type1v2]
        cases:
          - kind: anon-private
          - kind: thp
            size: 4M
            flags: [read]
          - kind: unaligned-vaddr
          - kind: size-zero
            size: "0"
            phases: device
        """
        let m = try Matrix.parse(node(yaml), file: Self.file)
        XCTAssertEqual(m.backends, [.type1v2])
        XCTAssertEqual(m.cases.map(\.kind), [.anonPrivate, .thp, .unalignedVaddr, .sizeZero])
        XCTAssertEqual(m.cases.map(\.size), [64 << 10, 4 << 20, 64 << 10, 0])
        XCTAssertEqual(m.cases[0].flags, ["read", "write"], "default flags")
        XCTAssertEqual(m.cases[1].flags, ["read"])
        XCTAssertEqual(m.cases[0].phases, [.device], "region kinds run with the device")
        XCTAssertEqual(m.cases[2].phases, [.preDevice, .device], "edges run before and after the device opens")
        XCTAssertEqual(m.cases[3].phases, [.device], "a scalar is a one-item list")
    }

    func testMatrixDefaultsToAllBackends() throws {
        let m = try Matrix.parse(node("schema: 1\ncases:\n  - kind: memfd\n"), file: Self.file)
        XCTAssertEqual(m.backends, BackendKind.allCases)
        XCTAssertEqual(m.cases.count, 1)
    }

    func testMatrixUnknownKind() throws {
        try assertRejects("schema: 1\ncases:\n  - kind: anon-private\n  - kind: anon-privat\n", matrix,
                          problem: "unknown region kind \"anon-privat\"", at: 4)
    }

    func testMatrixUnknownBackend() throws {
        try assertRejects("schema: 1\nbackends: [type1, iommufd2]\ncases:\n  - kind: memfd\n", matrix,
                          problem: "unknown backend \"iommufd2\"", at: 1)
    }

    func testMatrixUnknownKey() throws {
        try assertRejects("schema: 1\ncases:\n  - kind: thp\n    szie: 2M\n", matrix, problem: "unknown key \"szie\"", at: 4)
        try assertRejects("schema: 1\ncase:\n  - kind: thp\n", matrix, problem: "\"cases\" must be a list", at: 1)
        try assertRejects("schema: 1\ncases: []\nbackend: [type1]\n", matrix, problem: "unknown key \"backend\"", at: 3)
    }

    func testMatrixBadSize() throws {
        try assertRejects("schema: 1\ncases:\n  - kind: memfd\n    size: 12X\n", matrix, problem: "size \"12X\" is not a size", at: 3)
        try assertRejects("schema: 1\ncases:\n\n  - kind: memfd\n    size: \"0\"\n", matrix, problem: "size \"0\" is not a size", at: 4)
    }

    func testMatrixBadFlagAndPhase() throws {
        try assertRejects("schema: 1\ncases:\n  - kind: memfd\n    flags: [read, exec]\n", matrix,
                          problem: "unknown DMA flag \"exec\"", at: 3)
        try assertRejects("schema: 1\ncases:\n  - kind: bar\n    phases: [pre-device]\n", matrix,
                          problem: "cannot run pre-device", at: 3)
    }

    func testMatrixWrongSchema() throws {
        try assertRejects("schema: 2\ncases: []\n", matrix, problem: "schema 2 is not supported", at: 1)
        try assertRejects("cases: []\n", matrix, problem: "missing \"schema: 1\"", at: 1)
    }

    func testMatrixNonMappingRoot() throws {
        try assertRejects("- kind: memfd\n- kind: thp\n", matrix, problem: "must be a mapping", at: 1)
        try assertRejects("schema: 1\ncases:\n  - memfd\n", matrix, problem: "a case must be a mapping", at: 3)
    }

    // MARK: Expectations

    func testExpectationsGood() throws {
        let yaml = """
        schema: 1
        expectations:
          - kind: [hole, partial-hole]
            outcome: EFAULT
            decided_by: vaddr_get_pfns
          - kind: anon-private
            backends: type1v2
            phases: [device]
            flags: [read, write]
            kernel: ">=5.18, <6.5"
            outcome: ok
            decided_by: vfio_pin_pages_remote
            unmapped: size
          - kind: fs-file
            kernel: "<6.3"
            outcome: ok
            decided_by: pin_user_pages
            unmapped: 64K
            known_bug:
              reference: https://lore.kernel.org/x
              fixed_outcome: EFAULT
        """
        let e = try Expectations.parse(node(yaml), file: Self.file)
        XCTAssertEqual(e.rows.count, 3)
        XCTAssertEqual(e.rows.map(\.line), ["test.yaml:3", "test.yaml:6", "test.yaml:14"])
        XCTAssertEqual(e.rows[0].kinds, [.hole, .partialHole])
        XCTAssertEqual(e.rows[0].kernel, .any)
        XCTAssertNil(e.rows[0].backends)
        XCTAssertEqual(e.rows[0].outcome, "EFAULT")
        XCTAssertEqual(e.rows[0].decidedBy, "vaddr_get_pfns")
        XCTAssertEqual(e.rows[1].backends, [.type1v2])
        XCTAssertEqual(e.rows[1].phases, [.device])
        XCTAssertEqual(e.rows[1].flags, ["read", "write"])
        XCTAssertEqual(e.rows[1].kernel, KernelRange(bounds: [(.ge, KernelVersion(5, 18)), (.lt, KernelVersion(6, 5))]))
        XCTAssertEqual(e.rows[1].unmapped, .mappedSize)
        XCTAssertEqual(e.rows[2].unmapped, .bytes(64 << 10))
        XCTAssertEqual(e.rows[2].knownBug, KnownBug(reference: "https://lore.kernel.org/x", fixedOutcome: "EFAULT"))
        XCTAssertNil(e.rows[1].knownBug)
    }

    static let row = "  - kind: hole\n    outcome: EFAULT\n    decided_by: vaddr_get_pfns\n"

    func testExpectationsUnknownKind() throws {
        try assertRejects("schema: 1\nexpectations:\n" + Self.row + "  - kind: [hole, holes]\n    outcome: ok\n    decided_by: x\n",
                          expectations, problem: "unknown region kind \"holes\"", at: 6)
    }

    func testExpectationsUnknownBackend() throws {
        try assertRejects("schema: 1\nexpectations:\n  - kind: hole\n    backends: [type2]\n    outcome: ok\n    decided_by: x\n",
                          expectations, problem: "unknown backend \"type2\"", at: 3)
    }

    func testExpectationsUnknownKey() throws {
        try assertRejects("schema: 1\nexpectations:\n  - kind: hole\n    outcome: ok\n    decidedby: x\n    decided_by: x\n",
                          expectations, problem: "unknown key \"decidedby\"", at: 5)
        try assertRejects("schema: 1\nexpectations:\n  - kind: hole\n    outcome: ok\n    decided_by: x\n    known_bug:\n      reference: r\n      fixed: ok\n",
                          expectations, problem: "unknown key \"fixed\"", at: 8)
    }

    func testExpectationsBadOutcome() throws {
        try assertRejects("schema: 1\nexpectations:\n  - kind: hole\n    outcome: EFUALT\n    decided_by: x\n",
                          expectations, problem: "outcome \"EFUALT\"", at: 3)
        try assertRejects("schema: 1\nexpectations:\n  - kind: hole\n    decided_by: x\n",
                          expectations, problem: "needs \"outcome\"", at: 3)
        try assertRejects("schema: 1\nexpectations:\n  - kind: hole\n    outcome: ok\n    decided_by: x\n    known_bug:\n      reference: r\n      fixed_outcome: EFUALT\n",
                          expectations, problem: "fixed_outcome \"EFUALT\"", at: 7)
    }

    func testExpectationsMissingDecidedBy() throws {
        try assertRejects("schema: 1\nexpectations:\n" + Self.row + "  - kind: hole\n    outcome: ok\n",
                          expectations, problem: "needs \"decided_by\"", at: 6)
        try assertRejects("schema: 1\nexpectations:\n  - kind: hole\n    outcome: ok\n    decided_by: \"\"\n",
                          expectations, problem: "needs \"decided_by\"", at: 3)
    }

    func testExpectationsBadKernelRange() throws {
        try assertRejects("schema: 1\nexpectations:\n  - kind: hole\n    kernel: \">=six\"\n    outcome: ok\n    decided_by: x\n",
                          expectations, problem: "\"six\" is not a kernel version", at: 3)
        try assertRejects("schema: 1\nexpectations:\n  - kind: hole\n    kernel: \"6.5\"\n    outcome: ok\n    decided_by: x\n",
                          expectations, problem: "needs one of >=", at: 3)
    }

    func testExpectationsBadUnmapped() throws {
        try assertRejects("schema: 1\nexpectations:\n  - kind: hole\n    outcome: ok\n    decided_by: x\n    unmapped: all\n",
                          expectations, problem: "unmapped \"all\"", at: 3)
    }

    func testExpectationsWrongSchema() throws {
        try assertRejects("schema: 0\nexpectations: []\n", expectations, problem: "schema 0 is not supported", at: 1)
        try assertRejects("\n\nexpectations: []\n", expectations, problem: "missing \"schema: 1\"", at: 3)
    }

    func testExpectationsNonMappingRoot() throws {
        try assertRejects("- kind: hole\n", expectations, problem: "must be a mapping", at: 1)
        try assertRejects("schema: 1\nexpectations: none\n", expectations, problem: "\"expectations\" must be a list", at: 1)
    }

    // MARK: The real files

    static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    func realConfig(_ name: String) -> String? {
        let path = Self.repoRoot.appendingPathComponent("configs").appendingPathComponent(name).path
        guard FileManager.default.fileExists(atPath: path) else {
            XCTFail("\(path) does not exist: the shipped configuration is missing")
            return nil
        }
        return path
    }

    func testRealMatrixLoads() {
        guard let path = realConfig("matrix.yaml") else { return }
        do {
            let m = try Matrix.load(path)
            XCTAssertFalse(m.cases.isEmpty, "\(path) has no cases")
            XCTAssertFalse(m.backends.isEmpty, "\(path) has no backends")
        } catch {
            XCTFail("\(path): \(error)")
        }
    }

    func testRealExpectationsLoad() {
        guard let path = realConfig("expectations.yaml") else { return }
        do {
            let e = try Expectations.load(path)
            XCTAssertFalse(e.rows.isEmpty, "\(path) has no rows")
        } catch {
            XCTFail("\(path): \(error)")
        }
    }

    /// A kind the matrix runs but no expectation row names can only ever fail "no expectation".
    func testRealMatrixKindsAllHaveExpectations() {
        guard let mp = realConfig("matrix.yaml"), let ep = realConfig("expectations.yaml"),
              let m = try? Matrix.load(mp), let e = try? Expectations.load(ep) else { return }
        let covered = Set(e.rows.flatMap(\.kinds))
        let missing = Set(m.cases.map(\.kind)).subtracting(covered).map(\.rawValue).sorted()
        XCTAssertEqual(missing, [], "kinds in matrix.yaml with no row in expectations.yaml")
    }
}
