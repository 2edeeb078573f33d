import Foundation
import XCTest
import Yams
import FuzzSupport
@testable import Exerciser

/// Hostile configs: mutations of the real configs/matrix.yaml and configs/expectations.yaml (fixed
/// seed; 1,000 by default, 12,000 with VFIO_EXERCISER_FUZZ=deep) must each be accepted or end in
/// one ConfigError line naming the file — never a trap, never a hang. A few of the rejected ones
/// also go through the built binary.
///
/// Reproduce one input: FUZZ_INDEX=<n> swift test --disable-swift-testing --filter FuzzTests
/// (the input is also written to $TMPDIR/vfio-exerciser-fuzz-failures/ when it fails).
final class FuzzTests: XCTestCase {
    static let seed: UInt64 = 0x5EED_F1F0_2026_0001
    /// Inputs generated (the binary test draws from the same range).
    static let count = 12_000
    /// Long enough that only a hang (not a loaded CI machine) trips it: speed is not measured here.
    static let perInputLimit = 10.0

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let realMatrix = Array(FileManager.default.contents(atPath: packageRoot + "/configs/matrix.yaml") ?? Data())
    static let realExpectations = Array(FileManager.default.contents(atPath: packageRoot + "/configs/expectations.yaml") ?? Data())
    /// The real configs as trees, one per worker: Yams resolves a node's Tag (a class) in place when
    /// it emits or compares it, so workers emitting mutations of one shared tree would race.
    final class BaseNodes: @unchecked Sendable {
        let matrix: Node?, expectations: Node?
        init() {
            matrix = String(validating: FuzzTests.realMatrix, as: UTF8.self).flatMap { try? Yams.compose(yaml: $0) }
            expectations = String(validating: FuzzTests.realExpectations, as: UTF8.self).flatMap { try? Yams.compose(yaml: $0) }
        }
    }

    /// Input `index`: which file it stands for and its bytes. Deterministic per index.
    static func input(_ index: Int, _ nodes: BaseNodes) -> (matrix: Bool, bytes: [UInt8]) {
        let matrix = index % 2 == 0
        var gen = ConfigMutator(base: matrix ? realMatrix : realExpectations, baseNode: matrix ? nodes.matrix : nodes.expectations,
                                rng: FuzzRNG(seed: seed ^ (UInt64(index) &* 0xD1B5_4A32_D192_ED03)))
        return (matrix, gen.generate())
    }

    /// Writes `bytes` as `path` and parses it as the matrix or the expectations.
    static func parse(_ bytes: [UInt8], matrix: Bool, path: String) -> (error: ConfigError?, seconds: Double) {
        if !FileManager.default.createFile(atPath: path, contents: Data(bytes)) { return (ConfigError("test: cannot write \(path)"), 0) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        var failure: ConfigError?
        do throws(ConfigError) {
            if matrix { _ = try Matrix.load(path) } else { _ = try Expectations.load(path) }
        } catch {
            failure = error
        }
        return (failure, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }

    /// Why `message` is not one clear line naming `path`, or nil.
    static func problem(with message: String, path: String) -> String? {
        if message.trimmingCharacters(in: .whitespaces).isEmpty { return "empty message" }
        if let bad = message.unicodeScalars.first(where: {
            [.control, .lineSeparator, .paragraphSeparator].contains($0.properties.generalCategory)
        }) {
            return "message holds U+\(String(bad.value, radix: 16, uppercase: true)), not one line"
        }
        if !message.contains(path) { return "message does not name \(path)" }
        return nil
    }

    static func save(_ bytes: [UInt8], _ name: String) -> String {
        let dir = NSTemporaryDirectory() + "vfio-exerciser-fuzz-failures"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let p = dir + "/" + name
        _ = FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return p
    }

    func tempDir() throws -> String {
        let dir = NSTemporaryDirectory() + "vfio-fuzz-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    struct Outcome: Sendable {
        var index: Int
        var asMatrix: Bool
        var path: String
        var message: String?
        var seconds: Double
    }

    /// The watchdog's clock may be read before a worker's start (the worker took the lock first).
    func testWatchdogStartAfterNow() {
        let second: UInt64 = 1_000_000_000
        XCTAssertNil(Watchdog.overdue([0, 50 * second], now: 49 * second, limit: 20))
        XCTAssertNil(Watchdog.overdue([0, 30 * second], now: 49 * second, limit: 20))
        XCTAssertEqual(Watchdog.overdue([0, 0, 28 * second], now: 49 * second, limit: 20), 2)
        XCTAssertNil(Watchdog.overdue([0, 0], now: 49 * second, limit: 20), "idle slots are never overdue")
    }

    func testHostileConfigs() throws {
        XCTAssertFalse(Self.realMatrix.isEmpty, "configs/matrix.yaml not found")
        XCTAssertFalse(Self.realExpectations.isEmpty, "configs/expectations.yaml not found")
        let dir = try tempDir()
        let depth = try FuzzDepth.current()
        var indices = Array(0..<depth.count(quick: 1_000, deep: Self.count))
        let single = ProcessInfo.processInfo.environment["FUZZ_INDEX"].flatMap(Int.init)
        if let one = single { indices = [one] }
        let workers = fuzzWorkers()
        for w in 0..<workers { try FileManager.default.createDirectory(atPath: dir + "/w\(w)", withIntermediateDirectories: true) }
        let watchdog = Watchdog(limit: 20, slots: workers) { FuzzTests.save($0, "hang.input") }
        defer { watchdog.stop() }
        let start = Date()
        let nodes = (0..<workers).map { _ in BaseNodes() }
        let outcomes = parallelMap(indices, workers: workers) { i, w -> Outcome in
            let (matrix, bytes) = Self.input(i, nodes[w])
            // Mostly as the file it was made from; one in ten as the other file.
            let asMatrix = i % 10 == 9 ? !matrix : matrix
            let path = dir + "/w\(w)" + (asMatrix ? "/matrix.yaml" : "/expectations.yaml")
            watchdog.begin(w, "config input #\(i) (\(bytes.count) bytes)", bytes)
            let (error, seconds) = Self.parse(bytes, matrix: asMatrix, path: path)
            watchdog.end(w)
            return Outcome(index: i, asMatrix: asMatrix, path: path, message: error?.message, seconds: seconds)
        }
        let elapsed = Date().timeIntervalSince(start)
        var accepted = [0, 0], rejected = [0, 0], failures = 0
        var slowest = (seconds: 0.0, index: -1)
        var samples: [String] = []
        for o in outcomes {
            if o.seconds > slowest.seconds { slowest = (o.seconds, o.index) }
            var why: String?
            if o.seconds > Self.perInputLimit { why = String(format: "took %.2f s (limit %.0f s)", o.seconds, Self.perInputLimit) }
            if let message = o.message {
                rejected[o.asMatrix ? 0 : 1] += 1
                if let p = Self.problem(with: message, path: o.path) { why = (why.map { $0 + "; " } ?? "") + p }
                if samples.count < 12, o.index % 997 == 0 { samples.append(message.replacingOccurrences(of: dir, with: "DIR")) }
            } else {
                accepted[o.asMatrix ? 0 : 1] += 1
            }
            if let why {
                failures += 1
                if failures <= 20 {
                    let saved = Self.save(Self.input(o.index, nodes[0]).bytes, "config-\(o.index).yaml")
                    XCTFail("input #\(o.index) parsed as \(o.asMatrix ? "matrix" : "expectations"): \(why): \(o.message?.debugDescription ?? "accepted"); input saved as \(saved)")
                }
            }
        }
        let total = indices.count
        print("""
            config fuzz (\(depth.rawValue)): \(total) inputs (seed \(String(Self.seed, radix: 16))) in \(String(format: "%.1f", elapsed)) s on \(workers) threads: \
            matrix \(accepted[0]) accepted / \(rejected[0]) rejected, expectations \(accepted[1]) accepted / \(rejected[1]) rejected; \
            slowest \(String(format: "%.1f", slowest.seconds * 1000)) ms (#\(slowest.index)); \(failures) bad
            """)
        for s in samples { print("  e.g. \(s)") }
        if single == nil {
            // A generator that only produces garbage would prove little.
            XCTAssertGreaterThan(accepted[0] + accepted[1], total / 50, "too few inputs accepted: the mutations are too coarse")
            XCTAssertGreaterThan(rejected[0] + rejected[1], total / 2)
        }
    }

    /// Inputs that once broke or could break the loader, by name. Those with a message must be
    /// rejected with it, whichever file they are read as (nil: "—" for that file, any one line).
    func testNamedHostileConfigs() throws {
        let dir = try tempDir()
        let notSize = "is not a size (e.g. 64K, 2M, 1G)"
        let tooMany = "more than \(yamlMaxNodes) nodes once aliases are expanded"
        let tooDeep = "nested deeper than \(yamlMaxDepth) levels"
        // (name, bytes, message as the matrix, message as the expectations)
        var named: [(String, [UInt8], String?, String?)] = [
            ("empty", [], "empty document", "empty document"),
            ("whitespace", Array("  \n\n\t\n".utf8), nil, nil),
            ("comment only", Array("# nothing\n".utf8), "empty document", "empty document"),
            ("null document", Array("~\n".utf8), "the matrix must be a mapping", "the expectations must be a mapping"),
            ("BOM only", [0xEF, 0xBB, 0xBF], "empty document", "empty document"),
            ("NUL", [0], nil, nil),
            ("NUL in value", Array("schema: 1\ncases:\n  - kind: anon".utf8) + [0] + Array("-private\n".utf8), nil, nil),
            ("invalid UTF-8", Array("schema: 1\ncases:\n  - kind: ".utf8) + [0xC3, 0x28, 0xFF, 0xFE] + Array("\n".utf8),
             "not UTF-8 text (invalid byte at offset 27)", "not UTF-8 text (invalid byte at offset 27)"),
            ("lone surrogate", Array("schema: 1\n".utf8) + [0xED, 0xA0, 0x80], "not UTF-8 text", "not UTF-8 text"),
            ("UTF-16", [0xFF, 0xFE] + Array("schema: 1\n".utf8).flatMap { [$0, 0] }, "not UTF-8 text", "not UTF-8 text"),
            ("tab indentation", Array("schema: 1\ncases:\n\t- kind: anon-private\n".utf8), "not valid YAML", "not valid YAML"),
            ("escaped newline in a value", Array("schema: 1\ncases:\n  - kind: \"anon\\nprivate\\u2028\\e[31m\"\n".utf8),
             "unknown region kind \"anon\\nprivate\\u{2028}\\u{1B}[31m\"", nil),
            ("newline in a key", Array("schema: 1\ncases: []\n\"a\\nb\": 1\n".utf8), "unknown key \"a\\nb\"", nil),
            ("truncated", Array(Self.realExpectations.prefix(Self.realExpectations.count / 2)), nil, nil),
            ("two documents", Self.realMatrix + Array("\n---\n".utf8) + Self.realMatrix, nil, nil),
            ("undefined alias", Array("schema: 1\ncases: *nope\n".utf8), "not valid YAML", "not valid YAML"),
            ("recursive alias", Array("schema: 1\ncases: &a [*a]\n".utf8), nil, nil),
            ("merge key bomb", Array("a: &a {x: 1}\nb: &b {<<: [*a, *a, *a]}\nschema: 1\ncases: []\n".utf8), nil, nil),
            ("huge size", Array("schema: 1\ncases:\n  - kind: anon-private\n    size: 99999999999999999999999G\n".utf8),
             "size \"99999999999999999999999G\" " + notSize, nil),
            ("size 1Q", Array("schema: 1\ncases:\n  - kind: hugetlb-1G\n    size: 1Q\n".utf8), "size \"1Q\" " + notSize, nil),
            ("negative size", Array("schema: 1\ncases:\n  - kind: hugetlb-1G\n    size: -1G\n".utf8), "size \"-1G\" " + notSize, nil),
            // 2^34 GiB = 2^64 bytes: must not wrap to 0.
            ("size overflow by unit", Array("schema: 1\ncases:\n  - kind: anon-private\n    size: 17179869184G\n".utf8),
             "size \"17179869184G\" " + notSize, nil),
            // 2^64 + 1 GiB: a wrapping multiply would give a plausible 1G.
            ("size overflow to 1G", Array("schema: 1\ncases:\n  - kind: anon-private\n    size: 17179869185G\n".utf8),
             "size \"17179869185G\" " + notSize, nil),
            ("huge integer key", Array("schema: 1\ncases: []\n99999999999999999999999999999: 1\n".utf8),
             "unknown key \"99999999999999999999999999999\"", nil),
            ("tagged binary", Array("schema: !!binary AAAA\ncases: []\n".utf8),
             "YAML tag !!binary is not allowed in a config", "YAML tag !!binary is not allowed in a config"),
            ("python tag", Array("schema: !!python/object:os.system [ls]\ncases: []\n".utf8),
             ":1: YAML tag !!python/object:os.system is not allowed in a config", ":1: YAML tag !!python/object:os.system is not allowed in a config"),
            ("complex key", Array("schema: 1\n? [a, b]\n: c\ncases: []\n".utf8), "keys must be strings", nil),
            ("long line", Array("schema: 1\ncases: []\n# ".utf8) + Array(repeating: 0x41, count: 900_000), nil, nil),
            ("over 1 MiB", Array(repeating: 0x20, count: (1 << 20) + 1), "1048577 bytes is too large for a config (limit 1048576)",
             "1048577 bytes is too large for a config (limit 1048576)"),
            ("many documents", Array(String(repeating: "---\n", count: 50_000).utf8), nil, nil),
            ("many cases", Array(("schema: 1\ncases:\n" + String(repeating: "  - kind: anon-private\n", count: 20_000)).utf8), nil, nil),
        ]
        named.append(("billion laughs", Array(Self.billionLaughs(levels: 10, under: "cases").utf8), tooMany, tooMany))
        named.append(("billion laughs in kind", Array(("schema: 1\nexpectations:\n  - kind: " + Self.billionLaughs(levels: 9, under: nil)).utf8),
                      tooMany, tooMany))
        for depth in [65, 1_000, 100_000, 500_000] {
            named.append(("flow nesting \(depth)", Array(("schema: 1\ncases: " + String(repeating: "[", count: depth) + String(repeating: "]", count: depth)).utf8),
                          tooDeep, tooDeep))
            let unclosed = depth * 4 + 17 > yamlMaxBytes ? "bytes is too large for a config" : tooDeep
            named.append(("unclosed flow nesting \(depth)", Array(("schema: 1\ncases: " + String(repeating: "{a: ", count: depth)).utf8), unclosed, unclosed))
            named.append(("block nesting \(depth)", Array(("schema: 1\ncases:\n  " + String(repeating: "- ", count: depth) + "x\n").utf8), tooDeep, tooDeep))
        }
        var failures: [String] = []
        for (name, bytes, asMatrix_, asExpectations) in named {
            for (asMatrix, must) in [(true, asMatrix_), (false, asExpectations)] {
                let path = dir + (asMatrix ? "/matrix.yaml" : "/expectations.yaml")
                let (error, seconds) = Self.parse(bytes, matrix: asMatrix, path: path)
                let label = "\(name) as \(asMatrix ? "matrix" : "expectations")"
                if seconds > Self.perInputLimit { failures.append("\(label): took \(seconds) s") }
                if let error, let p = Self.problem(with: error.message, path: path) { failures.append("\(label): \(p): \(error.message.debugDescription)") }
                guard let must else { continue }
                if let error {
                    if !error.message.hasPrefix(path) || !error.message.contains(must) {
                        failures.append("\(label): \(error.message.debugDescription) is not \"\(path)…\(must)…\"")
                    }
                } else {
                    failures.append("\(label): accepted; it must be rejected with \"\(must)\"")
                }
            }
        }
        // Not a regular file: a FIFO would block a plain read forever, a directory cannot be read.
        let fifo = dir + "/fifo.yaml"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        for (path, must) in [(fifo, "not a regular file"), (dir, "not a regular file"), (dir + "/missing.yaml", "cannot read (No such file or directory)"),
                             ("/dev/zero", "not a regular file"), ("/proc/self/mem", "cannot read")] {
            let t0 = Date()
            do throws(ConfigError) { _ = try Matrix.load(path); failures.append("\(path): accepted") } catch {
                if let p = Self.problem(with: error.message, path: path) { failures.append("\(path): \(p)") }
                if !error.message.contains(must) { failures.append("\(path): \(error.message.debugDescription) does not say \"\(must)\"") }
            }
            if Date().timeIntervalSince(t0) > Self.perInputLimit { failures.append("\(path): too slow") }
        }
        XCTAssertEqual(failures, [])
        print("named hostile configs: \(named.count * 2 + 5) inputs")
    }

    static func billionLaughs(levels: Int, under key: String?) -> String {
        var y = "&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"
        var defs = ""
        for i in 1..<levels {
            defs += "l\(i)_: &l\(i) [" + Array(repeating: "*l\(i - 1)", count: 10).joined(separator: ", ") + "]\n"
        }
        if let key { return "l0_: \(y)\n" + defs + "schema: 1\n\(key): *l\(levels - 1)\n" }
        // Inline under an already open key: one flow sequence holding the anchors.
        y = "[\(y)"
        for i in 1..<levels { y += ", &l\(i) [" + Array(repeating: "*l\(i - 1)", count: 10).joined(separator: ", ") + "]" }
        return y + "]\n    outcome: ok\n    decided_by: x\nschema: 1\n"
    }

    /// 50 rejected configs through the real binary: `run --configs DIR` must exit 2 with exactly the
    /// in-process message on one stderr line and nothing on stdout.
    func testBadConfigDirsThroughBinary() throws {
        guard let exe = builtBinary() else { return XCTFail("no built vfio-exerciser binary next to the tests (swift build first)") }
        let root = try tempDir()
        var jobs: [(dir: String, expected: String, index: Int)] = []
        var i = 0
        let nodes = BaseNodes()
        while jobs.count < 50 && i < Self.count {
            defer { i += 1 }
            let (matrix, bytes) = Self.input(i * 37 % Self.count, nodes)
            let dir = root + "/c\(jobs.count)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: dir + "/matrix.yaml", contents: Data(matrix ? bytes : Self.realMatrix))
            FileManager.default.createFile(atPath: dir + "/expectations.yaml", contents: Data(matrix ? Self.realExpectations : bytes))
            let file = dir + (matrix ? "/matrix.yaml" : "/expectations.yaml")
            guard let error = Self.parse(bytes, matrix: matrix, path: file).error else { continue }
            jobs.append((dir, "vfio-exerciser: error: \(error.message)\n", i * 37 % Self.count))
        }
        XCTAssertEqual(jobs.count, 50)
        let results = spawnAll(jobs.map { (exe, ["run", "--device", "0000:99:99.9", "--configs", $0.dir]) }, timeout: 10)
        var slowest = 0.0
        for (job, r) in zip(jobs, results) {
            slowest = max(slowest, r.seconds)
            let err = String(decoding: r.stderr, as: UTF8.self)
            let label = "config input #\(job.index) via \(job.dir)"
            XCTAssertFalse(r.timedOut, "\(label): still running after 10 s")
            XCTAssertEqual(r.status, 2, "\(label): exit \(r.status) signal \(r.signal); stderr \(err.debugDescription)")
            XCTAssertEqual(r.stdout, [], "\(label): stdout not empty")
            XCTAssertEqual(err, job.expected, "\(label)")
            XCTAssertFalse(err.contains("Fatal error") || err.contains("Stack dump") || err.contains("Backtrace"), label)
        }
        print("bad config dirs through the binary: \(jobs.count) runs, slowest \(String(format: "%.2f", slowest)) s")
    }
}

// MARK: - Generator

/// Mutations of one real config: on the YAML tree (drop, duplicate, rename keys; swap scalar,
/// list and mapping; hostile values), then on the text (bytes, tokens, lines, anchors, nesting).
struct ConfigMutator {
    let base: [UInt8]
    let baseNode: Node?
    var rng: FuzzRNG

    init(base: [UInt8], baseNode: Node?, rng: FuzzRNG) {
        self.base = base
        self.baseNode = baseNode
        self.rng = rng
    }

    static let scalars: [String] = [
        "", " ", "~", "null", "true", "no", "0", "-1", "1", "1.0", "01", "0x10", "0o17", "1e400", "nan", ".nan", ".inf", "-0",
        "18446744073709551615", "18446744073709551616", "99999999999999999999999999999", "-18446744073709551616",
        "1G", "1Q", "1g", "1K", "0K", "0", "-1G", "-4096", "1GG", "G", "K1", " 4K", "4K ", "4 K", "½K", "٣M", "１G", "17179869184G", "16777216T",
        ">=", ">=6.5.", "<=99999999999999999999", ">=6.5", "<6.2", ">=6.5,<6.1", "==6.1.0", "=6.1", "6.5", ">=-1", "> =6", ",,,",
        ">=6.5-rc1", ">=٦.٥", ">=6..5", ">=.5", "<<6", ">=6.1.2.3.4", ">=1,>=2,>=3,<=4,<5,==6", ">= 6.5", ">=6.5 <7", ">=99999999999999999999.1",
        "ok", "ok ", " ok", "OK", "EFAULT", "EFUALT", "efault", "E2BIG", "EINVAL", "EEXIST", "ENOMEM", "EFAULT\n", "E", "ERRNO", "EPERM",
        "anon-private", "ANON-PRIVATE", "anon_private", "anon-private ", "bogus", "hugetlb-1G", "size-zero", "bar", "unmap-all", "prot-none",
        "type1", "type1v2", "type2", "TYPE1", "iommufd", "read", "write", "exec", "READ", "pre-device", "device", "post-device",
        "size", "SIZE", "mm/gup.c", "https://bugzilla.kernel.org/1",
        "a\nb", "a\tb", "\u{0}", "a\u{0}b", "\u{1b}[31mred\u{1b}[0m", "\u{7f}", "\u{85}", "\u{2028}", "\u{2029}", "\u{feff}",
        "\u{202e}gnp.exe", "💥", "é", "e\u{301}", "\u{10ffff}", "\u{fffd}", "\r", "\r\n", "\u{c}", "\u{b}",
        "*", "&", "!", "%", "@", "`", "|", ">", "#", "- ", ": ", "? ", "{", "}", "[", "]", "'", "\"", "\\", "---", "...",
        String(repeating: "A", count: 5000), String(repeating: "9", count: 400), String(repeating: "é", count: 1000),
        String(repeating: "a\n", count: 100),
    ]
    static let keys = [
        "schema", "backends", "cases", "kind", "size", "flags", "phases", "expectations", "outcome", "decided_by", "kernel",
        "unmapped", "accounted", "known_bug", "reference", "fixed_outcome", "Kind", "kinds", "backend", "sched", "", " ",
        "kind ", "<<", "?", "-", "💥", "a\nb", "\u{0}", "decided-by", "SCHEMA",
    ]
    static let inserts: [[UInt8]] = [
        [0], [0xFF], [0xFE], [0xC3], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xC0, 0xAF], [0xEF, 0xBB, 0xBF],
        Array("\t".utf8), Array("\r".utf8), Array("\r\n".utf8), Array("\u{1b}".utf8), Array("\u{2028}".utf8), Array("\u{85}".utf8),
        Array("---\n".utf8), Array("...\n".utf8), Array("%YAML 1.1\n".utf8), Array("%YAML 9.9\n".utf8), Array("%TAG ! tag:x,2000:\n".utf8),
        Array("&a ".utf8), Array("*a".utf8), Array("*nope".utf8), Array("<<: *a\n".utf8), Array("!!binary ".utf8), Array("!!int ".utf8),
        Array("!!map ".utf8), Array("!<tag:yaml.org,2002:str> ".utf8), Array("!local ".utf8), Array("? ".utf8), Array(": ".utf8),
        Array("- ".utf8), Array("[".utf8), Array("]".utf8), Array("{".utf8), Array("}".utf8), Array("'".utf8), Array("\"".utf8),
        Array("#".utf8), Array("|\n".utf8), Array(">-\n".utf8), Array("  ".utf8), Array("\n".utf8), Array(",".utf8),
        Array("💥".utf8), Array("\u{202e}".utf8), Array("9999999999999999999999".utf8), Array("-".utf8), Array("\\".utf8),
    ]
    static let tokens: [(String, String)] = [
        ("1G", "1Q"), ("2M", "-2M"), ("64K", "1Q"), ("64K", "18446744073709551616K"), (">=6.5", ">=6.5."), ("<6.5", "<=99999999999999999999"),
        (">=6.2", ">="), ("<6.2", "6.2"), ("EFAULT", "EFUALT"), ("EINVAL", ""), ("outcome: ok", "outcome: \"ok \""), ("outcome: ok", "outcome: \"\""),
        ("kind", "knid"), ("kind:", "kind: [kind: [kind: []]]"), ("schema: 1", "schema: 2"), ("schema: 1", ""), ("schema: 1", "schema: [1]"),
        ("cases:", "cases: 5"), ("cases:", "cases: {}"), ("expectations:", "expectations: {}"), ("expectations:", "expectations: ~"),
        ("type1v2", "type3"), ("anon-private", "anon-privat"), ("read", "rread"), ("decided_by", "decided-by"), ("decided_by: ", "decided_by: \"\" #"),
        ("size", "size: 1\n  size"), (": ", " "), ("- ", ""), ("[", ""), ("]", ""), ("  ", "\t"), ("  ", " "), ("\"", ""), ("\"", "'"),
        ("known_bug:", "known_bug: []"), ("reference:", "refrence:"), ("accounted: size", "accounted: -1"), ("accounted: size", "accounted: 1Q"),
        ("unmapped:", "unmapped: [size]"), ("flags: [read]", "flags: [read, read, exec]"), ("flags:", "flags: {read: 1}"),
        ("phases:", "phases: [post]"), ("kind: [", "kind: &k ["), ("outcome: ok", "outcome: *k"), ("backends:", "backends: &b"),
        ("- kind", "- &x\n    kind"), (": ok", ": !!binary b2s="), (":", ": &anchor"), ("kernel: \"", "kernel: \">=6.5.,"),
    ]

    mutating func generate() -> [UInt8] {
        switch rng.below(100) {
        case 0..<3: return special()
        case 3..<45: return textual(treeMutated())
        case 45..<75: return treeMutated()
        default: return textual(base)
        }
    }

    // MARK: Tree

    mutating func treeMutated() -> [UInt8] {
        guard var node = baseNode else { return base }
        for _ in 0..<rng.int(1...4) { node = mutate(node, depth: 0) }
        guard let out = try? Yams.serialize(node: node, allowUnicode: rng.chance(0.5)) else { return base }
        return Array(out.utf8)
    }

    mutating func hostileScalar() -> Node {
        if rng.chance(0.15) {
            let n = rng.pick(["-", ""]) + String(rng.next() >> UInt64(rng.below(64)))
            return Node(n + rng.pick(["", "K", "M", "G", "Q", "k"]))
        }
        return Node(rng.pick(Self.scalars), .implicit, rng.pick([.any, .plain, .singleQuoted, .doubleQuoted, .literal, .folded]))
    }

    mutating func hostileNode(depth: Int) -> Node {
        switch rng.below(8) {
        case 0: return Node([hostileScalar(), hostileScalar()])
        case 1: return Node([(Node(rng.pick(Self.keys)), hostileScalar())])
        case 2: return Node([Node]())
        case 3: return Node([(Node, Node)]())
        case 4 where depth < 40:
            var n = hostileScalar()
            for _ in 0..<rng.int(1...70) { n = rng.chance(0.5) ? Node([n]) : Node([(Node("kind"), n)]) }
            return n
        default: return hostileScalar()
        }
    }

    mutating func mutate(_ node: Node, depth: Int) -> Node {
        switch node {
        case .mapping(let m):
            var pairs = m.map { ($0.key, $0.value) }
            if !pairs.isEmpty, depth < 30, rng.chance(0.55) {
                let i = rng.below(pairs.count)
                if rng.chance(0.1) { pairs[i].0 = mutate(pairs[i].0, depth: depth + 1) } else { pairs[i].1 = mutate(pairs[i].1, depth: depth + 1) }
                return Node(pairs)
            }
            switch rng.below(9) {
            case 0 where !pairs.isEmpty: pairs.remove(at: rng.below(pairs.count))
            case 1 where !pairs.isEmpty: pairs.insert(pairs[rng.below(pairs.count)], at: rng.below(pairs.count + 1))
            case 2 where !pairs.isEmpty: pairs[rng.below(pairs.count)].0 = Node(rng.pick(Self.keys))
            case 3: pairs.append((Node(rng.pick(Self.keys)), hostileNode(depth: depth)))
            case 4 where !pairs.isEmpty: pairs[rng.below(pairs.count)].1 = hostileNode(depth: depth)
            case 5: pairs.shuffle(using: &rng)
            case 6: return Node(pairs.map { $0.1 })
            case 7: return hostileNode(depth: depth)
            default: pairs.removeAll()
            }
            return Node(pairs)
        case .sequence(let s):
            var items = Array(s)
            if !items.isEmpty, depth < 30, rng.chance(0.55) {
                let i = rng.below(items.count)
                items[i] = mutate(items[i], depth: depth + 1)
                return Node(items)
            }
            switch rng.below(8) {
            case 0 where !items.isEmpty: items.remove(at: rng.below(items.count))
            case 1 where !items.isEmpty: items.insert(items[rng.below(items.count)], at: rng.below(items.count + 1))
            case 2: items.insert(hostileNode(depth: depth), at: rng.below(items.count + 1))
            case 3: items.shuffle(using: &rng)
            case 4 where !items.isEmpty: return items[rng.below(items.count)]
            case 5: return Node(items.enumerated().map { (Node("k\($0.offset)"), $0.element) })
            case 6: return hostileNode(depth: depth)
            default: items.removeAll()
            }
            return Node(items)
        case .scalar(let s):
            switch rng.below(6) {
            case 0: return Node([node])
            case 1: return Node([(node, node)])
            case 2: return Node(s.string + rng.pick(Self.scalars))
            default: return hostileNode(depth: depth)
            }
        }
    }

    // MARK: Text

    mutating func textual(_ input: [UInt8]) -> [UInt8] {
        var b = input
        for _ in 0..<rng.int(1...4) {
            switch rng.below(13) {
            case 0: if !b.isEmpty { b = Array(b.prefix(rng.below(b.count))) }
            case 1, 2: b.insert(contentsOf: rng.pick(Self.inserts), at: rng.below(b.count + 1))
            case 3: b = replaceToken(b)
            case 4, 5: b = lines(b)
            case 6: if !b.isEmpty { b[rng.below(b.count)] = UInt8(truncatingIfNeeded: rng.next()) }
            case 7: b = Array(String(decoding: b, as: UTF8.self).replacingOccurrences(of: "\n", with: rng.pick(["\r\n", "\r", "\n\n"])).utf8)
            case 8: // an anchor on one value, an alias of it somewhere else
                if let c = colon(b) { b.insert(contentsOf: Array(" &a".utf8), at: c + 1) }
                if let c = colon(b) { b.insert(contentsOf: Array(" *a #".utf8), at: c + 1) }
            case 9: b.append(contentsOf: Array(("\n" + rng.pick(["cases", "expectations", "kind", "x"]) + ": "
                    + String(repeating: rng.pick(["[", "{a: ", "- "]), count: rng.int(1...300))).utf8))
            case 10: if !b.isEmpty { let i = rng.below(b.count); b.removeSubrange(i..<min(b.count, i + rng.int(1...64))) }
            case 11: b.insert(contentsOf: Array(String(repeating: rng.pick([" ", "\t", "a", "é", "- ", "[", "{"]), count: rng.int(1...4000)).utf8), at: rng.below(b.count + 1))
            default: b.insert(contentsOf: Array(rng.pick(Self.scalars).utf8), at: rng.below(b.count + 1))
            }
        }
        return b
    }

    mutating func colon(_ b: [UInt8]) -> Int? {
        let idx = b.indices.filter { b[$0] == UInt8(ascii: ":") }
        return idx.isEmpty ? nil : rng.pick(idx)
    }

    mutating func replaceToken(_ b: [UInt8]) -> [UInt8] {
        let (from, to) = rng.pick(Self.tokens)
        let s = String(decoding: b, as: UTF8.self)
        let ranges = s.ranges(of: from)
        guard !ranges.isEmpty else { return b }
        if rng.chance(0.2) { return Array(s.replacingOccurrences(of: from, with: to).utf8) }
        var out = s
        out.replaceSubrange(rng.pick(ranges), with: to)
        return Array(out.utf8)
    }

    mutating func lines(_ b: [UInt8]) -> [UInt8] {
        var ls = b.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
        guard !ls.isEmpty else { return b }
        let i = rng.below(ls.count)
        switch rng.below(6) {
        case 0: ls.remove(at: i)
        case 1: ls.insert(ls[i], at: rng.below(ls.count + 1))
        case 2: ls.swapAt(i, rng.below(ls.count))
        case 3: ls[i].insert(contentsOf: Array(repeating: rng.pick([UInt8(ascii: " "), UInt8(ascii: "\t")]), count: rng.int(1...9)), at: 0)
        case 4: while ls[i].first == UInt8(ascii: " ") { ls[i].removeFirst() }
        default: ls.shuffle(using: &rng)
        }
        return Array(ls.joined(separator: [UInt8(ascii: "\n")]))
    }

    /// Whole-file shapes: empty, alias bombs, deep nesting, too large, repeated documents.
    mutating func special() -> [UInt8] {
        switch rng.below(10) {
        case 0: return rng.pick([[], Array("\n".utf8), Array("~".utf8), Array("[]".utf8), Array("{}".utf8), Array("schema: 1".utf8), [0], [0xEF, 0xBB, 0xBF]])
        case 1: return Array(FuzzTests.billionLaughs(levels: rng.int(3...12), under: rng.pick(["cases", "expectations", "schema", "backends"])).utf8)
        case 2:
            let d = rng.int(50...200_000)
            return Array(("schema: 1\ncases: " + String(repeating: rng.pick(["[", "{k: ", "[{kind: "]), count: d)).utf8)
        case 3:
            // Block nesting by indentation: line i is indented i columns (~1 MiB at 1,400 levels).
            let d = rng.int(50...1_500)
            var s = Array("schema: 1\ncases:\n".utf8)
            for i in 0..<d { s += Array(repeating: UInt8(ascii: " "), count: i + 1) + Array("- \n".utf8) }
            return s
        case 4: return Array(repeating: base, count: rng.int(150...260)).flatMap { $0 }   // around the 1 MiB limit
        case 5: return Array(repeating: base + Array("\n---\n".utf8), count: rng.int(2...50)).flatMap { $0 }
        case 6: return (0..<rng.int(1...4096)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        case 7: return Array(("schema: 1\ncases:\n" + String(repeating: "  - kind: \(rng.pick(CaseKind.allCases).rawValue)\n", count: rng.int(1...5000))).utf8)
        case 8:
            var s = "schema: 1\nexpectations:\n"
            for _ in 0..<rng.int(1...2000) {
                s += "  - kind: \(rng.pick(CaseKind.allCases).rawValue)\n    outcome: \(rng.pick(["ok", "EFAULT", "EINVAL"]))\n    decided_by: x\n"
                s += "    kernel: \"\(rng.pick(["<", ">=", "==", "<="]))\(rng.int(0...9)).\(rng.int(0...99))\"\n"
            }
            return Array(s.utf8)
        default: return base + Array("\n".utf8) + Array(repeating: UInt8(ascii: "#"), count: rng.int(1...1_200_000))
        }
    }
}
