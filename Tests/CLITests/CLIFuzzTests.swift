import ArgumentParser
import Foundation
import XCTest
import FuzzSupport
@testable import Exerciser
@testable import vfio_exerciser

/// Hostile command lines: generated argv vectors (fixed seed) over the real subcommands and
/// options, parsed in process with the root command and mapped to an exit the way `main` does. Each
/// bad one must end in exit 2 with one stderr line; help requests in exit 0. Nothing that parses is
/// executed (vm boots QEMU, bind writes sysfs, exec-script execs a shell) — except `run`, as far as
/// loading the configs and opening the (nonexistent) device, and `help`. Known-bad ones also go
/// through the built binary. 300 lines by default (seconds), 10,000 with VFIO_EXERCISER_FUZZ=deep.
///
/// Reproduce one input: FUZZ_INDEX=<n> swift test --disable-swift-testing --filter CLIFuzzTests
final class CLIFuzzTests: XCTestCase {
    static let seed: UInt64 = 0xC11F_0022_2026_0002

    enum Verdict: Equatable {
        /// Parsed and not executed (would boot a VM, bind a device, …).
        case accepted(String)
        /// Help or usage text, exit 0.
        case help
        case rejected(Termination)
    }

    /// What the tool would do with `argv`, up to the point this test may safely go.
    static func evaluate(_ argv: [String]) -> (verdict: Verdict, termination: Termination?, parsed: Bool) {
        var parsed = false
        do {
            let command = try Root.parseAsRoot(argv)
            parsed = true
            switch command {
            case let run as Run:
                // The run path up to the device: configs, then the Engine on a device that does not exist.
                guard PCIDevice.lookup(run.device) == nil else { return (.accepted("run on an existing device (not run)"), nil, true) }
                _ = try run.matrix.load()
                var options = RunOptions(device: run.device)
                options.caseTimeout = run.matrix.caseTimeout
                _ = try Engine(options: options)
                return (.accepted("run: the Engine opened \(run.device)"), nil, true)
            case var root as Root:
                try root.run()   // no subcommand: the help screen (throws CleanExit)
                return (.accepted("root"), nil, true)
            default:
                let name = type(of: command)._commandName
                // `help X` parses into the parser's own help command: run it, as main does (it throws
                // the help request that ends in exit 0).
                if name == "help" {
                    var help = command
                    try help.run()
                    return (.accepted("help returned without a help screen"), nil, true)
                }
                return (.accepted(name), nil, true)
            }
        } catch {
            let t = CLI.termination(for: error)
            return (t.code == 0 ? .help : .rejected(t), t, parsed)
        }
    }

    /// Why `t` is not a clean exit 2 with one error line (or a clean help exit 0), or nil.
    static func problem(with t: Termination) -> String? {
        switch t.code {
        case 0:
            if !t.stderr.isEmpty { return "exit 0 with stderr \(t.stderr.debugDescription)" }
            if t.stdout.isEmpty { return "exit 0 (help) with nothing on stdout" }
            return nil
        case 2:
            if !t.stdout.isEmpty { return "exit 2 with stdout \(t.stdout.debugDescription)" }
            return lineProblem(t.stderr)
        default:
            return "exit \(t.code), expected 2 (or 0 for help): \(t.stderr.debugDescription)"
        }
    }

    static func lineProblem(_ stderr: String) -> String? {
        guard stderr.hasPrefix(CLI.errorPrefix) else { return "stderr does not start with \"\(CLI.errorPrefix)\": \(stderr.debugDescription)" }
        guard stderr.hasSuffix("\n") else { return "stderr does not end in a newline: \(stderr.debugDescription)" }
        let message = stderr.dropFirst(CLI.errorPrefix.count).dropLast()
        if message.trimmingCharacters(in: .whitespaces).isEmpty { return "empty error message" }
        if message.unicodeScalars.contains(where: { [.control, .lineSeparator, .paragraphSeparator].contains($0.properties.generalCategory) }) {
            return "error is not one line: \(stderr.debugDescription)"
        }
        if message.contains("Fatal error") || message.contains("Stack dump") { return "trap text in \(stderr.debugDescription)" }
        return nil
    }

    func testHostileCommandLines() throws {
        let grammar = try Grammar.fromParser()
        XCTAssertEqual(Set(grammar.commands.map(\.name)).intersection(["run", "vm", "probe", "list", "bind", "unbind", "exec-script", "bench"]).count, 8,
                       "the parser's own description lacks subcommands: \(grammar.commands.map(\.name))")
        let fixtures = try Fixtures.make()
        addTeardownBlock { fixtures.remove() }
        let depth = try FuzzDepth.current()
        var indices = Array(0..<depth.count(quick: 300, deep: 10_000))
        let spawned = depth.count(quick: 30, deep: 300)
        let single = ProcessInfo.processInfo.environment["FUZZ_INDEX"].flatMap(Int.init)
        if let one = single { indices = [one] }
        var accepted: [String: Int] = [:], help = 0, rejected = 0, failures = 0
        var slowest = (seconds: 0.0, index: -1)
        var knownBad: [(index: Int, argv: [String], termination: Termination)] = []
        var samples: [String] = []
        let start = Date()
        // One thread: ArgumentParser's parsing is not safe to run concurrently (it trapped so).
        let workers = 1
        let watchdog = Watchdog(limit: 20, slots: workers)
        defer { watchdog.stop() }
        let evaluated = parallelMap(indices, workers: workers) { i, w in
            var gen = ArgvGenerator(grammar: grammar, fixtures: fixtures, rng: FuzzRNG(seed: Self.seed ^ (UInt64(i) &* 0xD1B5_4A32_D192_ED03)))
            let argv = gen.generate()
            watchdog.begin(w, "argv #\(i) \(argv.map(\.debugDescription).joined(separator: " ").prefix(2000))")
            let t0 = DispatchTime.now().uptimeNanoseconds
            let (verdict, termination, parsed) = Self.evaluate(argv)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            watchdog.end(w)
            return (i, argv, verdict, termination, parsed, seconds)
        }
        let elapsed = Date().timeIntervalSince(start)
        for (i, argv, verdict, termination, parsed, seconds) in evaluated {
            if seconds > slowest.seconds { slowest = (seconds, i) }
            var why: String?
            if seconds > 10 { why = String(format: "took %.2f s (limit 10 s: a hang, not slowness)", seconds) }
            switch verdict {
            case .accepted(let what):
                accepted[what, default: 0] += 1
                if what.hasPrefix("run:") { why = (why ?? "") + " the Engine accepted a nonexistent device" }
                if what.hasPrefix("help ") { why = (why ?? "") + " " + what }
            case .help:
                help += 1
            case .rejected(let t):
                rejected += 1
                // Spawned later: not with NUL (no C string holds it), not a parsed `run --bind` (it
                // would look the device up for binding, with its own message).
                if !argv.contains(where: { $0.contains("\0") }), !(parsed && argv.contains("--bind")) { knownBad.append((i, argv, t)) }
                if samples.count < 15, i % 811 == 0 { samples.append(t.stderr.trimmingCharacters(in: .newlines)) }
            }
            if let t = termination, let p = Self.problem(with: t) { why = (why.map { $0 + "; " } ?? "") + p }
            if let why {
                failures += 1
                if failures <= 20 { XCTFail("argv #\(i) \(argv.map(\.debugDescription).joined(separator: " ")): \(why)") }
            }
        }
        let acceptedTotal = accepted.values.reduce(0, +)
        print("""
            argv fuzz (\(depth.rawValue)): \(indices.count) command lines (seed \(String(Self.seed, radix: 16))) in \(String(format: "%.1f", elapsed)) s on \(workers) threads: \
            \(rejected) rejected (exit 2), \(help) help (exit 0), \(acceptedTotal) parsed and not executed \
            (\(accepted.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))); \
            slowest \(String(format: "%.1f", slowest.seconds * 1000)) ms (#\(slowest.index)); \(failures) bad
            """)
        for s in samples { print("  e.g. \(s)") }
        if single == nil {
            // A generator that only produced garbage (or only help) would prove little.
            XCTAssertGreaterThan(acceptedTotal, indices.count / 50, "too few command lines parse: the generator is too coarse")
            XCTAssertGreaterThan(rejected, indices.count / 2)
            XCTAssertGreaterThan(help, 0, "no generated line asked for help")
        }

        // The built binary on a spread of the known-bad ones: the same line, exit 2, nothing on stdout.
        guard let exe = builtBinary() else { return XCTFail("no built vfio-exerciser binary next to the tests (swift build first)") }
        let stride = max(1, knownBad.count / spawned)
        let chosen = Swift.stride(from: 0, to: knownBad.count, by: stride).prefix(spawned).map { knownBad[$0] }
        if single == nil { XCTAssertEqual(chosen.count, spawned) }
        let t1 = Date()
        let results = spawnAll(chosen.map { (exe, $0.argv) }, timeout: 10)
        var slowestSpawn = 0.0
        for (job, r) in zip(chosen, results) {
            slowestSpawn = max(slowestSpawn, r.seconds)
            let err = String(decoding: r.stderr, as: UTF8.self)
            let label = "argv #\(job.index) \(job.argv.map(\.debugDescription).joined(separator: " "))"
            XCTAssertFalse(r.timedOut, "\(label): still running after 10 s")
            XCTAssertEqual(r.status, 2, "\(label): exit \(r.status) signal \(r.signal); stderr \(err.debugDescription)")
            XCTAssertEqual(r.stdout, [], "\(label): stdout \(String(decoding: r.stdout, as: UTF8.self).debugDescription)")
            XCTAssertNil(Self.lineProblem(err), "\(label)")
            XCTAssertEqual(err, job.termination.stderr, "\(label): the binary's line differs from the in-process one")
            XCTAssertFalse(err.contains("Backtrace") || err.contains("Stack dump") || err.contains("Fatal error"), label)
        }
        print("argv through the binary: \(chosen.count) known-bad runs in \(String(format: "%.1f", Date().timeIntervalSince(t1))) s, slowest \(String(format: "%.2f", slowestSpawn)) s")
    }

    /// Help requests, each through the built binary (main's real exit-0 path) and in process:
    /// exit 0, nothing on stderr, and the help screen of the command asked about.
    /// Refused before any guest boots, through the real binary (run(), not only validation).
    func testVMRefusalsThroughTheBinary() throws {
        guard let exe = builtBinary() else { return XCTFail("no built vfio-exerciser binary next to the tests (swift build first)") }
        let cases: [([String], String)] = [
            // The plain and the movable boot of one kernel are two reports: --output cannot hold both.
            (["vm", "--output", "/nonexistent/r.json"], "takes one report and this run boots 2 guests (debian:6.1, debian:6.1+movable)"),
            (["vm", "--boot", "movabel"], "--boot movabel: no such boot (matrix.yaml has: plain, movable)"),
        ]
        let results = spawnAll(cases.map { (exe, $0.0) }, timeout: 30, environment: [:])
        for ((argv, text), r) in zip(cases, results) {
            let err = String(decoding: r.stderr, as: UTF8.self)
            XCTAssertEqual(r.status, 2, "\(argv): \(err)")
            XCTAssertTrue(err.contains(text), "\(argv): \(err.debugDescription)")
            XCTAssertEqual(err.split(separator: "\n").count, 1, "\(argv): one line: \(err.debugDescription)")
        }
    }

    func testHelpThroughTheBinary() throws {
        guard let exe = builtBinary() else { return XCTFail("no built vfio-exerciser binary next to the tests (swift build first)") }
        let columns = 100
        let cases: [([String], ParsableCommand.Type)] = [
            ([], Root.self), (["--help"], Root.self), (["-h"], Root.self),
            (["help", "run"], Run.self), (["run", "-h"], Run.self), (["run", "--help"], Run.self),
            (["run", "--device", "0000:99:99.9", "--help"], Run.self),
            (["help", "vm"], VM.self), (["vm", "-h"], VM.self), (["list", "--help"], List.self),
        ]
        let results = spawnAll(cases.map { (exe, $0.0) }, timeout: 10, environment: ["COLUMNS": "\(columns)"])
        for ((argv, command), r) in zip(cases, results) {
            let want = Root.helpMessage(for: command, columns: columns).trimmingCharacters(in: .newlines)
            XCTAssertTrue(want.contains("USAGE: vfio-exerciser"), "\(command): \(want)")
            let out = String(decoding: r.stdout, as: UTF8.self)
            XCTAssertEqual(r.status, 0, "\(argv): exit \(r.status) signal \(r.signal)")
            XCTAssertEqual(r.stderr, [], "\(argv): stderr \(String(decoding: r.stderr, as: UTF8.self).debugDescription)")
            XCTAssertEqual(out.trimmingCharacters(in: .newlines), want, "\(argv): not the help of \(command._commandName)")
            XCTAssertTrue(out.hasSuffix("\n"), "\(argv): help does not end in a newline")
            // In process, the same path main takes.
            let (verdict, t, _) = Self.evaluate(argv)
            XCTAssertEqual(verdict, .help, "\(argv)")
            XCTAssertEqual(t?.code, 0, "\(argv)")
            XCTAssertEqual(t?.stderr, "", "\(argv)")
            XCTAssertTrue(t?.stdout.contains("USAGE: vfio-exerciser" + (command == Root.self ? " <subcommand>" : " " + command._commandName)) == true,
                          "\(argv): \(t?.stdout.prefix(200) ?? "nil")")
        }
    }

    /// Hand-picked lines, each with the exit it must give.
    func testNamedCommandLines() throws {
        let cases: [([String], Int32, String?)] = [
            (["run"], 2, "Missing expected argument '--device"),
            (["nope"], 2, "Unexpected argument 'nope'"),
            (["run", "--device", "0000:99:99.9", "--case-timeout", "nan"], 2, "--case-timeout nan is not a number of seconds"),
            (["run", "--device", "0000:99:99.9", "--case-timeout=-1"], 2, "--case-timeout -1.0 is not a number of seconds"),
            (["run", "--device", "0000:99:99.9", "--case-timeout", "0"], 2, "--case-timeout 0.0 is not a number of seconds"),
            (["run", "--device", "0000:99:99.9", "--case-timeout", "1e400"], 2, "--case-timeout inf is not a number of seconds"),
            (["vm", "--timeout=-1"], 2, "--timeout -1.0 is not a number of seconds"),
            (["vm", "--timeout", "nan"], 2, "--timeout nan is not a number of seconds"),
            (["vm", "--timeout", "1e20"], 2, "--timeout 1e+20 is not a number of seconds"),
            (["run", "--device", "../../../../tmp"], 2, "is not a PCI address"),
            (["run", "--device", "0000:99:99.9", "--dma-helper", "00:05.0/../.."], 2, "is not a PCI address"),
            (["run", "--device", "0000:00:03.0/../../../.."], 2, "is not a PCI address"),
            (["bind", "0000:00:03.0/../../../.."], 2, "is not a PCI address"),
            (["unbind", "--all", "--after-pid=-1"], 2, "--after-pid -1 is not a process id"),
            (["run", "--device", "0000:99:99.9", "--kind", "bogus"], 2, "'bogus' is invalid for '--kind <kind>'"),
            (["run", "--device", "0000:99:99.9", "--format", "xml"], 2,
             "vfio-exerciser: error: The value 'xml' is invalid for '--format <format>'. Please provide one of 'summary', 'table', 'json', 'ktap' or 'junit'. (see --help)\n"),
            // A long list of values: one line, comma-separated, not escaped line breaks.
            (["run", "--device", "0000:99:99.9", "--kind", "bogus"], 2,
             "Please provide one of the following: anon-private, anon-untouched, anon-shared, memfd,"),
            (["run", "--device", "0000:99:99.9"], 2, "no PCI device 0000:99:99.9"),
            (["run", "--device", "0000:99:99.9", "--configs", "/nonexistent"], 2, "/nonexistent/matrix.yaml: cannot read"),
            (["run", "--device", "0000:99:99.9", "--kind", "a\nb"], 2, "'a\\nb' is invalid"),
        ]
        for (argv, code, text) in cases {
            let (_, t, _) = Self.evaluate(argv)
            guard let t else { XCTFail("\(argv): parsed and accepted"); continue }
            XCTAssertEqual(t.code, code, "\(argv): \(t)")
            XCTAssertNil(Self.problem(with: t), "\(argv)")
            if let text { XCTAssertTrue(t.stderr.contains(text), "\(argv): \(t.stderr.debugDescription) should contain \(text.debugDescription)") }
        }
    }
}

// MARK: - Grammar from the parser itself

/// The subcommands and their options as `--experimental-dump-help` describes them, so the
/// generator follows the commands as they are.
struct Grammar {
    struct Argument {
        var kind: String            // option, flag, positional
        var names: [String]         // "--device", "-h"
        var valueName: String
        var allValues: [String]
    }
    struct Command {
        var name: String
        var arguments: [Argument]
    }
    var commands: [Command]

    static func fromParser() throws -> Grammar {
        var json = ""
        do { _ = try Root.parseAsRoot(["--experimental-dump-help"]) } catch { json = Root.fullMessage(for: error) }
        guard let root = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let command = root["command"] as? [String: Any] else { throw ConfigError("no dump-help JSON: \(json.prefix(200))") }
        var commands: [Command] = []
        func walk(_ c: [String: Any], prefix: [String]) {
            let name = c["commandName"] as? String ?? "?"
            var args: [Argument] = []
            for a in c["arguments"] as? [[String: Any]] ?? [] {
                let names = (a["names"] as? [[String: Any]] ?? []).compactMap { n -> String? in
                    guard let k = n["kind"] as? String, let v = n["name"] as? String else { return nil }
                    return (k == "long" ? "--" : "-") + v
                }
                args.append(Argument(kind: a["kind"] as? String ?? "option", names: names,
                                     valueName: a["valueName"] as? String ?? "", allValues: a["allValues"] as? [String] ?? []))
            }
            if !prefix.isEmpty { commands.append(Command(name: (prefix.dropFirst() + [name]).joined(separator: " "), arguments: args)) }
            for s in c["subcommands"] as? [[String: Any]] ?? [] { walk(s, prefix: prefix + [name]) }
        }
        walk(command, prefix: [])
        // Hidden options (not in the dump): the test hooks.
        for i in commands.indices where commands[i].name == "run" || commands[i].name == "vm" {
            if !commands[i].arguments.contains(where: { $0.names.contains("--inject") }) {
                commands[i].arguments.append(Argument(kind: "option", names: ["--inject"], valueName: "inject", allValues: []))
            }
        }
        for i in commands.indices where commands[i].name == "unbind" {
            if !commands[i].arguments.contains(where: { $0.names.contains("--after-pid") }) {
                commands[i].arguments.append(Argument(kind: "option", names: ["--after-pid"], valueName: "after-pid", allValues: []))
            }
        }
        return Grammar(commands: commands)
    }
}

// MARK: - Fixtures

/// Config directories the generated lines point --configs at: good, broken in several ways, a FIFO.
struct Fixtures {
    var root: String
    var dirs: [String]

    static func make() throws -> Fixtures {
        let root = NSTemporaryDirectory() + "vfio-cli-fuzz-\(getpid())"
        let pkg = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let matrix = FileManager.default.contents(atPath: pkg + "/configs/matrix.yaml") ?? Data()
        let expectations = FileManager.default.contents(atPath: pkg + "/configs/expectations.yaml") ?? Data()
        let skips = FileManager.default.contents(atPath: pkg + "/configs/skips.yaml") ?? Data()
        let variants: [(String, Data?, Data?)] = [
            ("good", matrix, expectations),
            ("empty", Data(), Data()),
            ("nul", Data([0x73, 0, 0x3A]), expectations),
            ("utf8", Data([0xFF, 0xFE, 0x41]), expectations),
            ("deep", Data(("schema: 1\ncases: " + String(repeating: "[", count: 200_000)).utf8), expectations),
            ("bomb", Data(("a: &a [x,x,x,x,x,x,x,x,x,x]\n" + (1..<10).map { "a\($0): &a\($0) [" + Array(repeating: "*a\($0 == 1 ? "" : String($0 - 1))", count: 10).joined(separator: ",") + "]" }.joined(separator: "\n") + "\nschema: 1\ncases: *a9\n").utf8), expectations),
            ("tabs", Data("schema: 1\ncases:\n\t- kind: thp\n".utf8), expectations),
            ("badexp", matrix, Data("schema: 1\nexpectations:\n  - kind: thp\n    outcome: EFUALT\n    decided_by: \"x\\ny\"\n".utf8)),
            ("unknownkind", Data("schema: 1\ncases:\n  - kind: \"\\e[31mthp\\u2028\"\n".utf8), expectations),
            ("nomatrix", nil, expectations),
            ("large", Data(repeating: 0x23, count: (1 << 20) + 10), expectations),
            ("fifo", nil, expectations),
            ("dirmatrix", nil, expectations),
        ]
        var dirs: [String] = []
        for (name, m, e) in variants {
            let dir = root + "/" + name
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            if let m { FileManager.default.createFile(atPath: dir + "/matrix.yaml", contents: m) }
            if let e { FileManager.default.createFile(atPath: dir + "/expectations.yaml", contents: e) }
            if name == "good" { FileManager.default.createFile(atPath: dir + "/skips.yaml", contents: skips) }
            if name == "fifo" { mkfifo(dir + "/matrix.yaml", 0o600) }
            if name == "dirmatrix" { try FileManager.default.createDirectory(atPath: dir + "/matrix.yaml", withIntermediateDirectories: true) }
            dirs.append(dir)
        }
        return Fixtures(root: root, dirs: dirs)
    }

    func remove() { try? FileManager.default.removeItem(atPath: root) }
}

// MARK: - Generator

struct ArgvGenerator {
    let grammar: Grammar
    let fixtures: Fixtures
    var rng: FuzzRNG

    static let hostile: [String] = [
        "", " ", "-", "--", "---", "-1", "0", "nan", "inf", "-inf", "1e400", "1e-400", "0x10", "٣", "１", "½",
        "99999999999999999999999999", "-99999999999999999999", "9223372036854775808", "2147483648", "4294967296",
        "a\nb", "a\tb", "\u{1b}[31mred", "\u{7f}", "\u{85}", "\u{2028}", "\u{feff}", "\u{202e}", "💥", "é", "e\u{301}",
        "\u{10ffff}", "\u{fffd}", "\r", "--help", "-h", "help", "--version", "--device", "--kind", "=", "--=", "-=",
        "'", "\"", "\\", "$(reboot)", "`id`", "; rm -rf /", "%s%n", "../../../../etc/passwd", "/dev/zero", "/proc/self/mem",
        String(repeating: "A", count: 100_000), String(repeating: "9", count: 4000), String(repeating: "é", count: 3000),
        "a\0b",
    ]
    static let unknownOptions = ["--devcie", "--kinds", "--Kind", "-x", "-kind", "--no-such", "--kind-", "--json=1", "--bind=yes",
                                 "--all=false", "--help=1", "-hx", "--=x", "--device=", "---device", "—device", "−−device"]
    static let subcommandTypos = ["runn", "RUN", "Run", "vm2", "prob", "lists", "bin", "un-bind", "exec", "benchmark", "", " run", "run ", "r", "-run", "💥"]

    mutating func pci() -> String {
        if rng.chance(0.55) {
            // Well-formed and absent from this machine (real ones sit on bus 00).
            let s = String(format: "%02x:%02x.%d", rng.int(0x80...0xFF), rng.int(0...31), rng.int(0...7))
            return rng.pick(["", "0000:", "10000:", "FFFF:", "ffffffff:"]) + s
        }
        return rng.pick(["", "x", "0000:00:03.0/../..", "../../../../tmp", "0000:00:20.0", "0000:00:03.8", "0000:0:3.0", "00:03.0 ",
                         "٠٠٠٠:٩٩:٩٩.٩", "0000:99:99.9\n", "0000:zz:00.0", "0000:99:99", ":::", "0000:99:99.9:0", "123456789:99:99.9",
                         String(repeating: "0", count: 5000), "-1", "/sys/bus/pci/devices"]) + (rng.chance(0.1) ? rng.pick(Self.hostile) : "")
    }

    mutating func seconds() -> String {
        rng.pick(["120", "0.5", "1", "30", "1000000", "1000001", "-1", "-0", "0", "0.0", "nan", "NaN", "-nan", "inf", "-inf", "infinity",
                  "1e400", "-1e400", "1e-400", "4.9e-324", "0x10", "0x1p3", "1_000", "", "٣", "1,5", "99999999999999999999999", "1e6",
                  "1e19", "18446744073.8", " 5", "5 ", "5s", "+5"])
    }

    mutating func value(for a: Grammar.Argument) -> String {
        if rng.chance(0.12) { return rng.pick(Self.hostile) }
        if !a.allValues.isEmpty, rng.chance(0.75) { return rng.pick(a.allValues) }
        let n = (a.valueName + " " + a.names.joined(separator: " ")).lowercased()
        if n.contains("device") { return pci() }
        if n.contains("timeout") { return seconds() }
        if n.contains("pid") { return rng.pick(["1", "0", "-1", "99999999999", "abc", "2147483648", "2147483647", "4194304", ""]) }
        if n.contains("configs") {
            return rng.chance(0.7) ? rng.pick(fixtures.dirs)
                : rng.pick(["/nonexistent", "", ".", "/", "/dev", "/proc/self", "configs", "/dev/null", "/etc/passwd", fixtures.root])
        }
        if n.contains("kind") { return rng.chance(0.7) ? rng.pick(CaseKind.allCases).rawValue : rng.pick(["anon", "ANON-PRIVATE", "thp ", "all"]) }
        if n.contains("backend") { return rng.chance(0.7) ? rng.pick(BackendKind.allCases).rawValue : rng.pick(["type2", "vfio", "TYPE1"]) }
        if n.contains("format") { return rng.pick(["table", "json", "ktap", "junit", "xml", "JSON", "tap"]) }
        if n.contains("color") { return rng.pick(["auto", "always", "never", "sometimes", "yes"]) }
        if n.contains("inject") { return rng.pick(["panic-after:1", "hang-after:0", "hang-after:-1", "x:y", ":", "panic-after:99999999999999999999"]) }
        if n.contains("kernel") && !n.contains("image") { return rng.pick(["debian:6.1", "debian:6.12", "debian:7.3", "debian:", "debian:../../x", "6.1", "local", ""]) }
        if n.contains("output") || n.contains("stream") || n.contains("dir") || n.contains("cache") || n.contains("out")
            || n.contains("modules") || n.contains("image") || n.contains("binary") || n.contains("script") || n.contains("path") {
            return fixtures.root + "/out-" + rng.pick(["a", "b/c", "ü", "x y"]) + (rng.chance(0.2) ? "/" : "")
        }
        // Unknown option type (added later): numbers, sizes and strings.
        return rng.pick(["1", "0", "-1", "64K", "1Q", "nan", "1e400", "x", "99999999999999999999", "2M", "1G"])
    }

    mutating func generate() -> [String] {
        var argv: [String] = []
        let roll = rng.below(100)
        if roll < 4 {
            argv.append(rng.pick(Self.subcommandTypos))
        } else if roll < 6 {
            argv += rng.pick([["help"], ["help", "run"], ["help", "nope"], ["--help"], ["-h"], ["--generate-completion-script", "bash"],
                              ["--generate-completion-script", "nosh"], ["--experimental-dump-help"], ["--version"]])
        } else if roll < 8 {
            // nothing: the root's help
        } else {
            let c = rng.pick(grammar.commands)
            argv += c.name.split(separator: " ").map(String.init)
            argv += arguments(for: c)
        }
        // Extra junk now and then.
        if rng.chance(0.08) { argv.insert(rng.pick(Self.unknownOptions + Self.hostile), at: rng.below(argv.count + 1)) }
        if rng.chance(0.03), !argv.isEmpty { argv.removeLast() }
        if rng.chance(0.03) { argv.shuffle(using: &rng) }
        return argv
    }

    mutating func arguments(for c: Grammar.Command) -> [String] {
        var out: [String] = []
        let options = c.arguments.filter { $0.kind != "positional" && !$0.names.contains("--help") && !$0.names.contains("-h") }
        let positionals = c.arguments.filter { $0.kind == "positional" }
        // Required things usually present, so that many lines get past the parser.
        if options.contains(where: { $0.names.contains("--device") }), rng.chance(0.85) {
            out += ["--device", pci()]
        }
        for p in positionals where rng.chance(0.8) { out.append(value(for: p)) }
        for _ in 0..<rng.int(0...5) {
            guard !options.isEmpty else { break }
            let o = rng.pick(options)
            let name = rng.pick(o.names.isEmpty ? ["--x"] : o.names)
            if o.kind == "flag" {
                out.append(rng.chance(0.05) ? name + "=" + rng.pick(["1", "true", ""]) : name)
                continue
            }
            switch rng.below(20) {
            case 0: out.append(name)                                   // missing value (or the next option taken as one)
            case 1: out.append(name + "=" + value(for: o))
            case 2: out += [name, name, value(for: o)]
            default: out += [name, value(for: o)]
            }
        }
        if rng.chance(0.06) { out.append(rng.pick(Self.unknownOptions)) }
        if rng.chance(0.05) { out.append(rng.pick(Self.hostile)) }              // a stray positional
        if rng.chance(0.04) { out += ["--", rng.pick(Self.hostile)] }
        if rng.chance(0.04) { out.append(rng.pick(["-h", "--help"])) }
        return out
    }
}

/// `list`: every kind and every event a line, so --kind and --event values can be looked up.
final class ListTests: XCTestCase {
    func testListNamesEveryKindAndEvent() {
        let lines = List.lines()
        XCTAssertEqual(lines.count, CaseKind.allCases.count + CaseEvent.allCases.count)
        for e in CaseEvent.allCases {
            XCTAssertTrue(lines.contains { $0.hasPrefix(e.rawValue + " ") && $0.contains(" event ") && $0.hasSuffix(e.summary) }, e.rawValue)
        }
        XCTAssertTrue(lines.contains { $0.hasPrefix("anon-private ") && $0.contains(" region ") })
    }
}
