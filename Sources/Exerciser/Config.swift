import Foundation
import Yams
import VFIO
import SystemPackage

public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Parses "64K", "2M", "1G", "4096".
public func parseSize(_ text: String) -> UInt64? {
    let t = text.trimmingCharacters(in: .whitespaces)
    guard let last = t.last else { return nil }
    let mult: UInt64
    var digits = t
    switch last {
    case "K", "k": mult = 1 << 10
    case "M", "m": mult = 1 << 20
    case "G", "g": mult = 1 << 30
    default: mult = 1
    }
    if mult != 1 { digits.removeLast() }
    guard !digits.isEmpty, digits.allSatisfy(\.isNumber), let n = UInt64(digits) else { return nil }
    let (r, overflow) = n.multipliedReportingOverflow(by: mult)
    return overflow ? nil : r
}

public func formatSize(_ n: UInt64) -> String {
    if n != 0 && n % (1 << 30) == 0 { return "\(n >> 30)G" }
    if n != 0 && n % (1 << 20) == 0 { return "\(n >> 20)M" }
    if n != 0 && n % (1 << 10) == 0 { return "\(n >> 10)K" }
    return "\(n)"
}

/// A YAML mapping read strictly: unknown keys are errors, every error names file and line.
struct Fields {
    let node: Node
    let file: String
    let map: Node.Mapping
    var used: Set<String> = []

    init(_ node: Node, _ file: String, what: String) throws(ConfigError) {
        guard let m = node.mapping else { throw ConfigError("\(Fields.at(node, file)): \(what) must be a mapping") }
        self.node = node
        self.file = file
        self.map = m
    }

    static func at(_ node: Node, _ file: String) -> String {
        if let m = node.mark { return "\(file):\(m.line)" }
        return file
    }

    var location: String { Fields.at(node, file) }

    mutating func node(_ key: String) -> Node? {
        used.insert(key)
        return map[key]
    }

    mutating func string(_ key: String) throws(ConfigError) -> String? {
        guard let n = node(key) else { return nil }
        guard let s = n.scalar?.string else { throw ConfigError("\(Fields.at(n, file)): \(key) must be a string") }
        return s
    }

    mutating func strings(_ key: String) throws(ConfigError) -> [String]? {
        guard let n = node(key) else { return nil }
        if let s = n.scalar?.string { return [s] }
        guard let seq = n.sequence else { throw ConfigError("\(Fields.at(n, file)): \(key) must be a string or a list") }
        var out: [String] = []
        for item in seq {
            guard let s = item.scalar?.string else { throw ConfigError("\(Fields.at(item, file)): \(key) items must be strings") }
            out.append(s)
        }
        return out
    }

    func finish(allowed: [String]) throws(ConfigError) {
        for (k, _) in map {
            guard let key = k.scalar?.string else { throw ConfigError("\(Fields.at(k, file)): keys must be strings") }
            if !used.contains(key) {
                throw ConfigError("\(Fields.at(k, file)): unknown key \"\(key)\" (expected one of: \(allowed.joined(separator: ", ")))")
            }
        }
    }
}

func loadYAML(_ path: String) throws(ConfigError) -> Node {
    let text: String
    do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
        throw ConfigError("\(path): cannot read (\((error as NSError).localizedDescription))")
    }
    do {
        guard let node = try Yams.compose(yaml: text) else { throw ConfigError("\(path): empty document") }
        return node
    } catch let e as ConfigError {
        throw e
    } catch {
        let msg = "\(error)".split(whereSeparator: \.isNewline).first.map(String.init) ?? "\(error)"
        throw ConfigError("\(path): not valid YAML: \(msg)")
    }
}

func checkSchema(_ f: inout Fields) throws(ConfigError) {
    guard let s = try f.string("schema") else { throw ConfigError("\(f.location): missing \"schema: 1\"") }
    guard s == "1" else { throw ConfigError("\(f.location): schema \(s) is not supported (this tool reads schema 1)") }
}

func parseBackends(_ names: [String]?, _ where_: String) throws(ConfigError) -> [BackendKind]? {
    guard let names else { return nil }
    var out: [BackendKind] = []
    for n in names {
        guard let b = BackendKind(rawValue: n) else {
            throw ConfigError("\(where_): unknown backend \"\(n)\" (known: \(BackendKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        out.append(b)
    }
    return out
}

func parseKind(_ n: String, _ where_: String) throws(ConfigError) -> CaseKind {
    guard let k = CaseKind(rawValue: n) else {
        throw ConfigError("\(where_): unknown region kind \"\(n)\" (see `vfio-exerciser list`)")
    }
    return k
}

func parseFlags(_ names: [String]?, _ where_: String) throws(ConfigError) -> [String]? {
    guard let names else { return nil }
    for n in names where !["read", "write"].contains(n) {
        throw ConfigError("\(where_): unknown DMA flag \"\(n)\" (read, write)")
    }
    return names
}

// MARK: - Matrix

/// One planned case before expansion over backends, phases and BARs.
public struct CaseTemplate: Sendable, Equatable {
    public var kind: CaseKind
    public var size: UInt64
    public var flags: [String]
    public var phases: [Phase]
}

/// configs/matrix.yaml: which backends and kinds run, with sizes and flags.
public struct Matrix: Sendable, Equatable {
    public var backends: [BackendKind]
    public var cases: [CaseTemplate]

    public static func load(_ path: String) throws(ConfigError) -> Matrix {
        try parse(loadYAML(path), file: path)
    }

    public static func parse(_ root: Node, file: String) throws(ConfigError) -> Matrix {
        var f = try Fields(root, file, what: "the matrix")
        try checkSchema(&f)
        let backends = try parseBackends(f.strings("backends"), f.location) ?? BackendKind.allCases
        guard let casesNode = f.node("cases"), let seq = casesNode.sequence else {
            throw ConfigError("\(f.location): \"cases\" must be a list")
        }
        var cases: [CaseTemplate] = []
        for item in seq {
            var c = try Fields(item, file, what: "a case")
            guard let kn = try c.string("kind") else { throw ConfigError("\(c.location): a case needs \"kind\"") }
            let kind = try parseKind(kn, c.location)
            var size = kind.defaultSize
            if let s = try c.string("size") {
                guard let v = parseSize(s), v > 0 || kind == .sizeZero else {
                    throw ConfigError("\(c.location): size \"\(s)\" is not a size (e.g. 64K, 2M, 1G)")
                }
                size = v
            }
            let flags = try parseFlags(c.strings("flags"), c.location) ?? kind.defaultFlags
            var phases = kind.phases
            if let ps = try c.strings("phases") {
                phases = []
                for p in ps {
                    guard let ph = Phase(rawValue: p) else {
                        throw ConfigError("\(c.location): unknown phase \"\(p)\" (pre-device, device)")
                    }
                    if kind.needsDevice && ph == .preDevice {
                        throw ConfigError("\(c.location): \(kind.rawValue) needs the device, so it cannot run pre-device")
                    }
                    phases.append(ph)
                }
            }
            try c.finish(allowed: ["kind", "size", "flags", "phases"])
            cases.append(CaseTemplate(kind: kind, size: size, flags: flags, phases: phases))
        }
        try f.finish(allowed: ["schema", "backends", "cases"])
        return Matrix(backends: backends, cases: cases)
    }
}

// MARK: - Expectations

public struct KnownBug: Sendable, Equatable {
    public var reference: String
    /// What a fixed kernel returns; the bug no longer reproducing is then reported as a failure
    /// telling to update the config, never as a silent pass.
    public var fixedOutcome: String?
}

public enum ByteExpectation: Sendable, Equatable {
    case mappedSize
    case bytes(UInt64)
}

/// One row of configs/expectations.yaml.
public struct Expectation: Sendable, Equatable {
    public var line: String
    public var kinds: [CaseKind]
    public var backends: [BackendKind]?
    public var phases: [Phase]?
    public var flags: [String]?
    public var kernel: KernelRange
    public var outcome: String
    public var decidedBy: String
    public var unmapped: ByteExpectation?
    /// Bytes the map must charge to the process's locked/pinned memory.
    public var accounted: ByteExpectation?
    public var knownBug: KnownBug?

    func matches(_ r: CaseRecord, _ v: KernelVersion) -> Bool {
        guard let k = CaseKind(rawValue: r.kind), kinds.contains(k) else { return false }
        if let b = backends, !b.map(\.rawValue).contains(r.backend) { return false }
        if let p = phases, !p.contains(r.phase) { return false }
        if let f = flags, Set(f) != Set(r.flags) { return false }
        return kernel.contains(v)
    }
}

public struct Expectations: Sendable, Equatable {
    public var rows: [Expectation]

    public static func load(_ path: String) throws(ConfigError) -> Expectations {
        try parse(loadYAML(path), file: path)
    }

    static func validOutcome(_ s: String) -> Bool { s == "ok" || Errno(symbol: s) != nil }

    public static func parse(_ root: Node, file: String) throws(ConfigError) -> Expectations {
        var f = try Fields(root, file, what: "the expectations")
        try checkSchema(&f)
        guard let list = f.node("expectations"), let seq = list.sequence else {
            throw ConfigError("\(f.location): \"expectations\" must be a list")
        }
        var rows: [Expectation] = []
        for item in seq {
            var e = try Fields(item, file, what: "an expectation")
            let loc = e.location
            guard let kn = try e.strings("kind") else { throw ConfigError("\(loc): an expectation needs \"kind\"") }
            var kinds: [CaseKind] = []
            for n in kn { kinds.append(try parseKind(n, loc)) }
            let backends = try parseBackends(e.strings("backends"), loc)
            var phases: [Phase]?
            if let ps = try e.strings("phases") {
                phases = []
                for p in ps {
                    guard let ph = Phase(rawValue: p) else { throw ConfigError("\(loc): unknown phase \"\(p)\"") }
                    phases?.append(ph)
                }
            }
            let flags = try parseFlags(e.strings("flags"), loc)
            var kernel = KernelRange.any
            if let k = try e.string("kernel") {
                do { kernel = try KernelRange(parsing: k) } catch { throw ConfigError("\(loc): \(error.message)") }
            }
            guard let outcome = try e.string("outcome") else { throw ConfigError("\(loc): an expectation needs \"outcome\"") }
            guard validOutcome(outcome) else {
                throw ConfigError("\(loc): outcome \"\(outcome)\" is neither ok nor an errno name such as EFAULT")
            }
            guard let decided = try e.string("decided_by"), !decided.isEmpty else {
                throw ConfigError("\(loc): an expectation needs \"decided_by\" (the kernel function that decides it)")
            }
            func bytes(_ key: String) throws(ConfigError) -> ByteExpectation? {
                guard let u = try e.string(key) else { return nil }
                if u == "size" { return .mappedSize }
                if let n = parseSize(u) { return .bytes(n) }
                throw ConfigError("\(loc): \(key) \"\(u)\" must be \"size\" or a byte count such as 64K")
            }
            let unmapped = try bytes("unmapped")
            let accounted = try bytes("accounted")
            var bug: KnownBug?
            if let bn = e.node("known_bug") {
                var b = try Fields(bn, file, what: "known_bug")
                guard let ref = try b.string("reference") else { throw ConfigError("\(b.location): known_bug needs \"reference\"") }
                let fixed = try b.string("fixed_outcome")
                if let fixed, !validOutcome(fixed) { throw ConfigError("\(b.location): fixed_outcome \"\(fixed)\" is not ok or an errno name") }
                try b.finish(allowed: ["reference", "fixed_outcome"])
                bug = KnownBug(reference: ref, fixedOutcome: fixed)
            }
            try e.finish(allowed: ["kind", "backends", "phases", "flags", "kernel", "outcome", "decided_by", "unmapped", "accounted", "known_bug"])
            rows.append(Expectation(line: loc, kinds: kinds, backends: backends, phases: phases, flags: flags, kernel: kernel,
                                    outcome: outcome, decidedBy: decided, unmapped: unmapped, accounted: accounted, knownBug: bug))
        }
        try f.finish(allowed: ["schema", "expectations"])
        return Expectations(rows: rows)
    }

    /// The verdict for one record on one kernel. Pure: the core of every report.
    public func judge(_ r: CaseRecord, kernel: KernelVersion) -> Verdict {
        if case .skip(let why) = r.outcome { return Verdict(.skip, why) }
        if case .lost(let why) = r.outcome { return Verdict(.fail, "case did not finish: \(why)") }
        let matching = rows.filter { $0.matches(r, kernel) }
        guard let row = matching.first else {
            return Verdict(.fail, "no expectation for \(r.backend)/\(r.kind) on \(kernel)")
        }
        if matching.count > 1 {
            return Verdict(.fail, "ambiguous expectation: \(matching.map(\.line).joined(separator: ", ")) all match")
        }
        let got = r.outcome.token ?? "?"
        var problems: [String] = []
        if got != row.outcome {
            if let bug = row.knownBug {
                problems.append("known bug \(bug.reference) no longer reproduces: got \(got), the bug gives \(row.outcome); update \(row.line)")
            } else {
                problems.append("got \(got), expected \(row.outcome)")
            }
        }
        for c in r.checks where !c.passed { problems.append("\(c.name): \(c.detail)") }
        func want(_ b: ByteExpectation) -> UInt64 { if case .bytes(let n) = b { return n } else { return r.size } }
        // An accepted map must unmap exactly what it mapped unless the row says otherwise.
        let u = row.unmapped ?? .mappedSize
        if got == "ok", r.unmappedBytes != want(u) {
            problems.append("unmap reported \(r.unmappedBytes.map(String.init) ?? "nothing"), expected \(want(u))")
        }
        if got == "ok", let a = row.accounted, r.accountedBytes != Int64(want(a)) {
            problems.append("map charged \(r.accountedBytes.map(String.init) ?? "nothing") bytes of locked memory, expected \(want(a))")
        }
        if !r.cleanupOK { problems.append("clean-up failed") }
        if !problems.isEmpty {
            return Verdict(.fail, problems.joined(separator: "; "), expected: row.outcome, decidedBy: row.decidedBy,
                           reference: row.knownBug?.reference)
        }
        if let bug = row.knownBug {
            return Verdict(.xfail, "known kernel bug reproduced (\(bug.reference))", expected: row.outcome,
                           decidedBy: row.decidedBy, reference: bug.reference)
        }
        return Verdict(.pass, got, expected: row.outcome, decidedBy: row.decidedBy)
    }
}
