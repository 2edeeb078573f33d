import Foundation
import Yams
import CYaml
import VFIO
import SystemPackage

public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var message: String
    /// Control characters and line breaks (a quoted "\n" in a value, a path) are escaped: the
    /// message is always one line.
    public init(_ message: String) { self.message = oneLine(message) }
    public var description: String { message }
}

/// `text` with control characters and line/paragraph separators escaped as \n, \u{1B}, ….
public func oneLine(_ text: String) -> String {
    var out = ""
    for u in text.unicodeScalars {
        switch u.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator: out += u.escaped(asASCII: true)
        default: out.unicodeScalars.append(u)
        }
    }
    return out
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

    /// The list under `key`, which a config file must have.
    mutating func list(_ key: String) throws(ConfigError) -> [Node] {
        guard let n = node(key), let seq = n.sequence else { throw ConfigError("\(location): \"\(key)\" must be a list") }
        return Array(seq)
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

/// Bounds for a config file (the real ones are a few KB): hostile input fails fast with one line
/// instead of exhausting the stack (Yams composes recursively: ~10,000 nested "[" overflow
/// an 8 MiB stack) or the time of whatever walks the tree (alias bombs).
let yamlMaxBytes = 1 << 20
let yamlMaxDepth = 64
let yamlMaxNodes = 100_000

func loadYAML(_ path: String) throws(ConfigError) -> Node {
    var st = stat()
    guard stat(path, &st) == 0 else { throw ConfigError("\(path): cannot read (\(String(cString: strerror(errno))))") }
    // A FIFO or device would block or never end.
    guard st.st_mode & S_IFMT == S_IFREG else { throw ConfigError("\(path): not a regular file") }
    guard st.st_size <= yamlMaxBytes else {
        throw ConfigError("\(path): \(st.st_size) bytes is too large for a config (limit \(yamlMaxBytes))")
    }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ConfigError("\(path): cannot read (\(String(cString: strerror(errno))))")
    }
    guard let text = String(validating: data, as: UTF8.self) else {
        let valid = data.withUnsafeBytes { b in
            var it = b.makeIterator()
            var dec = UTF8()
            var n = 0
            loop: while true {
                switch dec.decode(&it) {
                case .scalarValue(let u): n += UTF8.width(u)
                case .emptyInput, .error: break loop
                }
            }
            return n
        }
        throw ConfigError("\(path): not UTF-8 text (invalid byte at offset \(valid))")
    }
    try checkYAMLShape(text, path)
    do {
        guard let node = try Yams.compose(yaml: text) else { throw ConfigError("\(path): empty document") }
        return node
    } catch let e as ConfigError {
        throw e
    } catch let e as YamlError {
        throw ConfigError(describeYAMLError(e, path))
    } catch {
        let msg = "\(error)".split(whereSeparator: \.isNewline).first.map(String.init) ?? "\(error)"
        throw ConfigError("\(path): not valid YAML: \(msg)")
    }
}

/// "file:line:column: not valid YAML: problem (context)" from Yams' multi-line description.
func describeYAMLError(_ e: YamlError, _ path: String) -> String {
    func at(_ m: Mark) -> String { "\(path):\(m.line):\(m.column)" }
    func ctx(_ c: YamlError.Context?) -> String { c.map { " (\($0.text) at line \($0.mark.line))" } ?? "" }
    switch e {
    case let .reader(problem, offset, value, _):
        return "\(path): not valid YAML: \(problem)" + (offset.map { " at byte \($0)" } ?? "") + (value >= 0 ? " (0x\(String(value, radix: 16)))" : "")
    case let .scanner(c, problem, m, _), let .parser(c, problem, m, _), let .composer(c, problem, m, _):
        return "\(at(m)): not valid YAML: \(problem)\(ctx(c))"
    default:
        let msg = "\(e)".split(whereSeparator: \.isNewline).first.map(String.init) ?? "\(e)"
        return "\(path): not valid YAML: \(msg)"
    }
}

/// Walks libyaml's events (iterative, linear) before Yams composes the tree: nesting deeper than
/// `yamlMaxDepth`, more than `yamlMaxNodes` nodes once aliases are expanded, or an explicit tag
/// outside YAML's core schema (`!!python/object:…`: a config is plain data) is refused.
/// Syntax errors are left to `Yams.compose`, which names them.
func checkYAMLShape(_ text: String, _ path: String) throws(ConfigError) {
    var bytes = Array(text.utf8)
    let problem: String? = bytes.withUnsafeMutableBufferPointer { buf in
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return "\(path): out of memory" }
        defer { yaml_parser_delete(&parser) }
        yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
        yaml_parser_set_input_string(&parser, buf.baseAddress, buf.count)
        func name(_ p: UnsafeMutablePointer<yaml_char_t>?) -> String? { p.map { String(cString: $0) } }
        func badTag(_ p: UnsafeMutablePointer<yaml_char_t>?) -> String? {
            guard let t = name(p), t != "!" else { return nil }
            let core = "tag:yaml.org,2002:"
            if t.hasPrefix(core), ["str", "int", "bool", "null", "float", "seq", "map"].contains(t.dropFirst(core.count)) { return nil }
            return t.hasPrefix(core) ? "!!" + t.dropFirst(core.count) : t
        }
        var nodes = 0
        var open: [(anchor: String?, first: Int)] = []
        var sizes: [String: Int] = [:]
        while true {
            var event = yaml_event_t()
            guard yaml_parser_parse(&parser, &event) == 1 else { return nil }
            defer { yaml_event_delete(&event) }
            let line = event.start_mark.line + 1
            let tag: String? = switch event.type {
            case YAML_SCALAR_EVENT: badTag(event.data.scalar.tag)
            case YAML_SEQUENCE_START_EVENT: badTag(event.data.sequence_start.tag)
            case YAML_MAPPING_START_EVENT: badTag(event.data.mapping_start.tag)
            default: nil
            }
            if let tag { return "\(path):\(line): YAML tag \(tag) is not allowed in a config" }
            switch event.type {
            case YAML_STREAM_END_EVENT:
                return nil
            case YAML_SCALAR_EVENT:
                nodes += 1
                if let a = name(event.data.scalar.anchor) { sizes[a] = 1 }
            case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                nodes += 1
                let anchor = event.type == YAML_SEQUENCE_START_EVENT ? event.data.sequence_start.anchor : event.data.mapping_start.anchor
                open.append((name(anchor), nodes))
                if open.count > yamlMaxDepth { return "\(path):\(line): nested deeper than \(yamlMaxDepth) levels" }
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                if let o = open.popLast(), let a = o.anchor { sizes[a] = nodes - o.first + 1 }
            case YAML_ALIAS_EVENT:
                nodes += name(event.data.alias.anchor).flatMap { sizes[$0] } ?? 1
            default:
                break
            }
            if nodes > yamlMaxNodes {
                return "\(path):\(line): more than \(yamlMaxNodes) nodes once aliases are expanded"
            }
        }
    }
    if let problem { throw ConfigError(problem) }
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
    /// Only these backends run the case (nil: every backend of the matrix).
    public var backends: [BackendKind]? = nil
}

/// configs/matrix.yaml: which backends and kinds run, with sizes and flags.
public struct Matrix: Sendable, Equatable {
    public var backends: [BackendKind]
    public var cases: [CaseTemplate]
    /// Boots beside the plain one (`vm` runs each kernel once per boot).
    public var boots: [BootVariant] = []

    public static func load(_ path: String) throws(ConfigError) -> Matrix {
        try parse(loadYAML(path), file: path)
    }

    public static func parse(_ root: Node, file: String) throws(ConfigError) -> Matrix {
        var f = try Fields(root, file, what: "the matrix")
        try checkSchema(&f)
        let backends = try parseBackends(f.strings("backends"), f.location) ?? BackendKind.allCases
        var cases: [CaseTemplate] = []
        for item in try f.list("cases") {
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
            let only = try parseBackends(c.strings("backends"), c.location)
            if let o = only, let b = o.first(where: { !backends.contains($0) }) {
                throw ConfigError("\(c.location): backend \(b.rawValue) is not in the matrix's backends")
            }
            try c.finish(allowed: ["kind", "size", "flags", "phases", "backends"])
            cases.append(CaseTemplate(kind: kind, size: size, flags: flags, phases: phases, backends: only))
        }
        var boots: [BootVariant] = []
        for item in f.node("boots")?.sequence ?? [] {
            var b = try Fields(item, file, what: "a boot")
            let loc = b.location
            guard let name = try b.string("name"), !name.isEmpty,
                  name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else {
                throw ConfigError("\(loc): a boot needs a \"name\" of letters, digits and dashes")
            }
            guard !boots.contains(where: { $0.name == name }) else { throw ConfigError("\(loc): boot \(name) is named twice") }
            guard let append = try b.strings("append"), !append.isEmpty, append.allSatisfy({ !$0.isEmpty && !$0.contains(" ") }) else {
                throw ConfigError("\(loc): boot \(name) needs \"append\": kernel parameters without spaces")
            }
            guard let kn = try b.strings("kinds"), !kn.isEmpty else { throw ConfigError("\(loc): boot \(name) needs \"kinds\"") }
            var kinds: [CaseKind] = []
            for n in kn { kinds.append(try parseKind(n, loc)) }
            guard let why = try b.string("why"), !why.isEmpty else { throw ConfigError("\(loc): boot \(name) needs \"why\"") }
            try b.finish(allowed: ["name", "append", "kinds", "why"])
            boots.append(BootVariant(name: name, append: append, kinds: kinds, why: why))
        }
        try f.finish(allowed: ["schema", "backends", "cases", "boots"])
        return Matrix(backends: backends, cases: cases, boots: boots)
    }
}

// MARK: - Expectations

public struct KnownBug: Sendable, Equatable {
    public var reference: String
    /// The bug shows as this kernel log line (a WARN): that line then is the bug, not a failure,
    /// and its absence means the bug is gone.
    public var kernelLog: String? = nil
    /// What a fixed kernel returns; the bug no longer reproducing is then reported as a failure
    /// telling to update the config, never as a silent pass.
    public var fixedOutcome: String?
    /// The line comes from a WARN_ON_ONCE: it shows in the first case that hits the bug only, so
    /// it is accepted where it shows and not required in the others.
    public var warnOnce = false
    /// The bug shows as this check failing (a named state the tool measured, not a log line).
    public var check: String? = nil
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
    public var exceptBackends: [BackendKind] = []
    public var phases: [Phase]?
    public var flags: [String]?
    public var kernel: KernelRange
    public var outcome: String
    public var decidedBy: String
    public var unmapped: ByteExpectation?
    /// Bytes the map must charge to the process's locked/pinned memory.
    public var accounted: ByteExpectation?
    /// Level the IOMMU must map at ("4K", "2M", "1G"), checked where debugfs tells.
    public var iommuPage: String? = nil
    public var knownBug: KnownBug?
    /// Kernel parameters the boot must have (`boot:`); such a row wins over one without.
    public var boot: [String]? = nil

    func matches(_ r: CaseRecord, _ v: KernelVersion) -> Bool {
        guard let k = CaseKind(rawValue: r.kind), kinds.contains(k) else { return false }
        if let b = backends, !b.map(\.rawValue).contains(r.backend) { return false }
        if exceptBackends.map(\.rawValue).contains(r.backend) { return false }
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
        var rows: [Expectation] = []
        for item in try f.list("expectations") {
            var e = try Fields(item, file, what: "an expectation")
            let loc = e.location
            guard let kn = try e.strings("kind") else { throw ConfigError("\(loc): an expectation needs \"kind\"") }
            var kinds: [CaseKind] = []
            for n in kn { kinds.append(try parseKind(n, loc)) }
            let backends = try parseBackends(e.strings("backends"), loc)
            let except = try parseBackends(e.strings("except_backends"), loc) ?? []
            if backends != nil && !except.isEmpty { throw ConfigError("\(loc): give backends or except_backends, not both") }
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
            let page = try e.string("iommu_page")
            if let page, !["4K", "2M", "1G"].contains(page) {
                throw ConfigError("\(loc): iommu_page \"\(page)\" must be 4K, 2M or 1G")
            }
            var bug: KnownBug?
            if let bn = e.node("known_bug") {
                var b = try Fields(bn, file, what: "known_bug")
                guard let ref = try b.string("reference") else { throw ConfigError("\(b.location): known_bug needs \"reference\"") }
                let fixed = try b.string("fixed_outcome")
                if let fixed, !validOutcome(fixed) { throw ConfigError("\(b.location): fixed_outcome \"\(fixed)\" is not ok or an errno name") }
                let log = try b.string("kernel_log")
                if log?.isEmpty == true { throw ConfigError("\(b.location): kernel_log must not be empty") }
                let once = try b.string("warn_once")
                if let once, once != "true" && once != "false" { throw ConfigError("\(b.location): warn_once must be true or false") }
                if once == "true" && log == nil { throw ConfigError("\(b.location): warn_once qualifies kernel_log: give kernel_log too") }
                let check = try b.string("check")
                if check?.isEmpty == true { throw ConfigError("\(b.location): check must name a check such as folio-in-one-zone") }
                try b.finish(allowed: ["reference", "fixed_outcome", "kernel_log", "warn_once", "check"])
                bug = KnownBug(reference: ref, kernelLog: log, fixedOutcome: fixed, warnOnce: once == "true", check: check)
            }
            let boot = try parseBoot(e.strings("boot"), loc)
            try e.finish(allowed: ["kind", "backends", "except_backends", "phases", "flags", "kernel", "boot", "outcome", "decided_by", "unmapped", "accounted", "iommu_page", "known_bug"])
            rows.append(Expectation(line: loc, kinds: kinds, backends: backends, exceptBackends: except, phases: phases, flags: flags, kernel: kernel,
                                    outcome: outcome, decidedBy: decided, unmapped: unmapped, accounted: accounted, iommuPage: page,
                                    knownBug: bug, boot: boot))
        }
        try f.finish(allowed: ["schema", "expectations"])
        return Expectations(rows: rows)
    }

    /// The rows that decide a case: one, or the config is wrong.
    public func matching(_ r: CaseRecord, kernel: KernelVersion, boot: BootParams = .none) -> [Expectation] {
        preferringBoot(rows.filter { $0.matches(r, kernel) && boot.satisfies($0.boot) }, \.boot)
    }

    /// The verdict for one record on one kernel and boot. Pure: the core of every report.
    public func judge(_ r: CaseRecord, kernel: KernelVersion, boot: BootParams = .none) -> Verdict {
        if case .skip(let why) = r.outcome { return Verdict(.skip, why) }
        if case .lost(let why) = r.outcome { return Verdict(.fail, "case did not finish: \(why)") }
        let matching = self.matching(r, kernel: kernel, boot: boot)
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
        // A known bug that shows as a kernel log line: that line is the bug reproducing.
        var logSeen = row.knownBug?.kernelLog == nil || row.knownBug?.warnOnce == true
        var checkSeen = row.knownBug?.check == nil
        for c in r.checks where !c.passed {
            if c.name == "kernel-log", let sig = row.knownBug?.kernelLog, c.detail.contains(sig) {
                logSeen = true
                continue
            }
            if let name = row.knownBug?.check, c.name == name {
                checkSeen = true
                continue
            }
            problems.append("\(c.name): \(c.detail)")
        }
        if !logSeen, let bug = row.knownBug, let sig = bug.kernelLog {
            problems.append("known bug \(bug.reference) no longer reproduces: no kernel log line with \"\(sig)\"; update \(row.line)")
        }
        if !checkSeen, let bug = row.knownBug, let name = bug.check {
            problems.append("known bug \(bug.reference) no longer reproduces: the \(name) check passed; update \(row.line)")
        }
        if got == "ok", let want = row.iommuPage, let have = r.iommuPageSize, have != want {
            problems.append("IOMMU mapped it with \(have) pages, expected \(want)")
        }
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
