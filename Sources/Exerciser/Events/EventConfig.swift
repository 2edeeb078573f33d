import Foundation
import Yams

/// Whether an outcome is the kernel's promise (the pinning process and the device keep seeing
/// the same page: a desync is a kernel bug) or documented semantics (the process replaced its
/// memory: the device keeps the old page, and that is what must happen).
public enum EventSemantics: String, Sendable, Equatable {
    case promise, documented
}

/// One kind × event template of configs/events.yaml.
public struct EventTemplate: Sendable, Equatable {
    public var kinds: [CaseKind]
    public var events: [CaseEvent]
    public var backends: [BackendKind]
    public var flags: [String]?
    /// Run only when --event names it (`opt_in: true`): cases not yet steady enough for CI's matrix.
    public var optIn = false
}

/// One expectation row for event cases.
public struct EventExpectation: Sendable, Equatable {
    public var line: String
    public var kinds: [CaseKind]
    public var events: [CaseEvent]
    public var backends: [BackendKind]?
    public var exceptBackends: [BackendKind] = []
    public var kernel: KernelRange
    /// Observation name → the token it must be (`event` → ok or an errno name).
    public var observe: [String: String]
    public var semantics: EventSemantics
    public var decidedBy: String
    public var knownBug: String?
    /// Kernel parameters the boot must have (`boot:`); such a row wins over one without.
    public var boot: [String]? = nil
    /// What the map before the event must give (`map:`): an errno means the event never runs
    /// and nothing is observed.
    public var map: String = "ok"
    /// A known bug's kernel log line (a WARN_ON_ONCE shows in the first case only): accepted.
    public var kernelLog: String? = nil
    /// A known bug that shows as this check failing: required, and then accepted.
    public var knownCheck: String? = nil

    func matches(_ r: CaseRecord, _ v: KernelVersion) -> Bool {
        guard let k = CaseKind(rawValue: r.kind), kinds.contains(k),
              let e = r.event.flatMap(CaseEvent.init(rawValue:)), events.contains(e) else { return false }
        if let b = backends, !b.map(\.rawValue).contains(r.backend) { return false }
        if exceptBackends.map(\.rawValue).contains(r.backend) { return false }
        return kernel.contains(v)
    }
}

/// configs/events.yaml: which kind × event cases run and what each must observe.
public struct EventConfig: Sendable, Equatable {
    public var cases: [EventTemplate] = []
    public var rows: [EventExpectation] = []

    public init(cases: [EventTemplate] = [], rows: [EventExpectation] = []) {
        self.cases = cases
        self.rows = rows
    }

    /// The observations a promise is about, and what they must be: the pinning process and the
    /// device agree, and the pinned pages stay where the pin found them.
    static let promised = ["device_write": "seen", "cpu_write": "seen", "pinned": "kept"]

    public static func load(_ path: String) throws(ConfigError) -> EventConfig {
        try parse(loadYAML(path), file: path)
    }

    /// events.yaml next to expectations.yaml, or no event cases when there is none.
    public static func load(dir: String) throws(ConfigError) -> EventConfig {
        let p = dir + "/events.yaml"
        return FileManager.default.fileExists(atPath: p) ? try load(p) : EventConfig()
    }

    static func parseEvents(_ names: [String]?, _ loc: String) throws(ConfigError) -> [CaseEvent] {
        guard let names, !names.isEmpty else { throw ConfigError("\(loc): \"events\" must name at least one event") }
        var out: [CaseEvent] = []
        for n in names {
            guard let e = CaseEvent(rawValue: n) else {
                throw ConfigError("\(loc): unknown event \"\(n)\" (known: \(CaseEvent.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            out.append(e)
        }
        return out
    }

    static func parseKinds(_ names: [String]?, _ loc: String) throws(ConfigError) -> [CaseKind] {
        guard let names, !names.isEmpty else { throw ConfigError("\(loc): \"kinds\" must name at least one kind") }
        var out: [CaseKind] = []
        for n in names {
            let k = try parseKind(n, loc)
            guard !k.isEdge else { throw ConfigError("\(loc): \(n) is an argument edge, not memory an event can act on") }
            out.append(k)
        }
        return out
    }

    public static func parse(_ root: Node, file: String) throws(ConfigError) -> EventConfig {
        var f = try Fields(root, file, what: "the event config")
        try checkSchema(&f)
        var out = EventConfig()
        for item in f.node("cases")?.sequence ?? [] {
            var c = try Fields(item, file, what: "an event case")
            let loc = c.location
            let kinds = try parseKinds(c.strings("kinds"), loc)
            let events = try parseEvents(c.strings("events"), loc)
            guard let backends = try parseBackends(c.strings("backends"), loc), !backends.isEmpty else {
                throw ConfigError("\(loc): an event case needs \"backends\"")
            }
            let flags = try parseFlags(c.strings("flags"), loc)
            let optIn = try c.string("opt_in")
            if let optIn, optIn != "true" && optIn != "false" { throw ConfigError("\(loc): opt_in must be true or false") }
            try c.finish(allowed: ["kinds", "events", "backends", "flags", "opt_in"])
            out.cases.append(EventTemplate(kinds: kinds, events: events, backends: backends, flags: flags, optIn: optIn == "true"))
        }
        for item in f.node("expectations")?.sequence ?? [] {
            var e = try Fields(item, file, what: "an event expectation")
            let loc = e.location
            let kinds = try parseKinds(e.strings("kinds"), loc)
            let events = try parseEvents(e.strings("events"), loc)
            let backends = try parseBackends(e.strings("backends"), loc)
            let except = try parseBackends(e.strings("except_backends"), loc) ?? []
            if backends != nil && !except.isEmpty { throw ConfigError("\(loc): give backends or except_backends, not both") }
            var kernel = KernelRange.any
            if let k = try e.string("kernel") {
                do { kernel = try KernelRange(parsing: k) } catch { throw ConfigError("\(loc): \(error.message)") }
            }
            guard let sem = try e.string("semantics") else { throw ConfigError("\(loc): an event expectation needs \"semantics\" (promise or documented)") }
            guard let semantics = EventSemantics(rawValue: sem) else { throw ConfigError("\(loc): semantics \"\(sem)\" must be promise or documented") }
            guard let decided = try e.string("decided_by"), !decided.isEmpty else {
                throw ConfigError("\(loc): an event expectation needs \"decided_by\" (the commit or kernel function)")
            }
            let map = try e.string("map") ?? "ok"
            guard Expectations.validOutcome(map) else { throw ConfigError("\(loc): map \"\(map)\" is neither ok nor an errno name") }
            // Every observation the events produce must be given, and nothing else; none when
            // the map itself fails.
            let names = map == "ok" ? Set(events.flatMap(\.observations)) : []
            var observe: [String: String] = [:]
            for n in names.sorted() {
                guard let v = try e.string(n) else { throw ConfigError("\(loc): \(events.map(\.rawValue).joined(separator: ", ")) need \"\(n)\"") }
                if n == "event" || n == "untracked_unmap" {
                    guard Expectations.validOutcome(v) else { throw ConfigError("\(loc): \(n) \"\(v)\" is neither ok nor an errno name") }
                } else if n == "dirty_bitmap" || n == "unmap_bitmap" || n == "hw_dirty_cap" || n == "migration_cap" {
                    guard DirtyToken.valid(n, v) else {
                        throw ConfigError("\(loc): \(n) \"\(v)\" must be \(n == "migration_cap" ? "absent or pgsize=N,max_bitmap=M" : (n == "hw_dirty_cap" ? DirtyToken.capability : DirtyToken.bitmap).joined(separator: ", ")) or an errno name")
                    }
                } else if !Sight.tokens(for: n).contains(v) {
                    throw ConfigError("\(loc): \(n) \"\(v)\" must be one of \(Sight.tokens(for: n).joined(separator: ", "))")
                }
                observe[n] = v
            }
            let bug = try e.string("known_bug")
            // A known-bug row describes what the buggy kernel shows instead of the promise.
            if semantics == .promise, bug == nil, let (n, want) = promised.sorted(by: { $0.key < $1.key }).first(where: { observe[$0.key] != nil && observe[$0.key] != $0.value }) {
                throw ConfigError("\(loc): a promise means the process and the device agree: \(n) must be \(want), not \(observe[n]!)")
            }
            if bug != nil && semantics != .promise { throw ConfigError("\(loc): a known bug breaks a promise: semantics must be promise") }
            let boot = try parseBoot(e.strings("boot"), loc)
            let log = try e.string("kernel_log")
            if log != nil && bug == nil { throw ConfigError("\(loc): kernel_log names a known bug's log line: give known_bug too") }
            if log?.isEmpty == true { throw ConfigError("\(loc): kernel_log must not be empty") }
            let check = try e.string("known_check")
            if check != nil && bug == nil { throw ConfigError("\(loc): known_check names a known bug's failing check: give known_bug too") }
            try e.finish(allowed: ["kinds", "events", "backends", "except_backends", "kernel", "boot", "map", "semantics", "decided_by", "known_bug", "kernel_log",
                                   "known_check"] + names.sorted())
            out.rows.append(EventExpectation(line: loc, kinds: kinds, events: events, backends: backends, exceptBackends: except,
                                             kernel: kernel, observe: observe, semantics: semantics, decidedBy: decided, knownBug: bug, boot: boot,
                                             map: map, kernelLog: log, knownCheck: check))
        }
        try f.finish(allowed: ["schema", "cases", "expectations"])
        return out
    }

    /// The kind × event cases: each template's kinds and events on its backends (those the run keeps).
    public func plan(backends: [BackendKind]?, kinds: [CaseKind]?, events: [CaseEvent]?, matrix: Matrix) -> [PlannedCase] {
        var out: [PlannedCase] = []
        // Opt-in templates run only for an event --event names.
        for t in cases where !t.optIn || t.events.contains(where: { events?.contains($0) ?? false }) {
            for b in t.backends where (backends?.contains(b) ?? true) && matrix.backends.contains(b) {
                for k in t.kinds where kinds?.contains(k) ?? true {
                    for e in t.events where events?.contains(e) ?? true {
                        out.append(PlannedCase(backend: b, phase: .device, kind: k, instance: nil, size: k.defaultSize,
                                               flags: t.flags ?? k.defaultFlags, event: e))
                    }
                }
            }
        }
        return out
    }

    /// The verdict for one event record. Pure, like Expectations.judge.
    /// The rows that decide an event case: one, or the config is wrong.
    public func matching(_ r: CaseRecord, kernel: KernelVersion, boot: BootParams = .none) -> [EventExpectation] {
        preferringBoot(rows.filter { $0.matches(r, kernel) && boot.satisfies($0.boot) }, \.boot)
    }

    public func judge(_ r: CaseRecord, kernel: KernelVersion, boot: BootParams = .none) -> Verdict {
        if case .skip(let why) = r.outcome { return Verdict(.skip, why) }
        if case .lost(let why) = r.outcome { return Verdict(.fail, "case did not finish: \(why)") }
        let matching = self.matching(r, kernel: kernel, boot: boot)
        guard let row = matching.first else { return Verdict(.fail, "no event expectation for \(r.backend)/\(r.kind)+\(r.event ?? "?") on \(kernel)") }
        if matching.count > 1 { return Verdict(.fail, "ambiguous event expectation: \(matching.map(\.line).joined(separator: ", ")) all match") }
        let why = "\(row.semantics.rawValue): \(row.decidedBy)"
        var problems: [String] = []
        let got = r.outcome.token ?? "?"
        if got != row.map { problems.append("the map before the event gave \(got)" + (row.map == "ok" ? "" : ", expected \(row.map)")) }
        var mismatched: [String] = []
        var broken: [String] = []
        for (name, want) in row.observe.sorted(by: { $0.key < $1.key }) {
            let got = r.observations?[name] ?? "nothing"
            guard got != want else { continue }
            mismatched.append("\(name): got \(got), expected \(want)")
            if row.semantics == .promise && Self.promised[name] == want { broken.append(mismatched.last!) }
        }
        var checkSeen = row.knownCheck == nil
        for c in r.checks where !c.passed {
            if c.name == "kernel-log", let sig = row.kernelLog, c.detail.contains(sig) { continue }
            if c.name == row.knownCheck { checkSeen = true; continue }
            problems.append("\(c.name): \(c.detail)")
            // A dirty bitmap that misses a page the device wrote loses it in a migration.
            if c.name.hasSuffix("-covers-written") { broken.append(problems.last!) }
        }
        if !checkSeen, let name = row.knownCheck { problems.append("the \(name) check passed") }
        if row.map != "ok", let o = r.observations, !o.isEmpty {
            problems.append("observed \(o.keys.sorted().joined(separator: ", ")) although the map gave \(got)")
        }
        if !r.cleanupOK { problems.append("clean-up failed") }
        let log = r.kernelLog.isEmpty ? "kernel log: nothing" : "kernel log: " + r.kernelLog.joined(separator: " | ")
        if let bug = row.knownBug {
            if mismatched.isEmpty && problems.isEmpty {
                return Verdict(.xfail, "known kernel bug reproduced (\(bug)); \(log)", decidedBy: row.decidedBy, reference: bug)
            }
            return Verdict(.fail, "known bug \(bug) no longer reproduces as \(row.line) says: " + (mismatched + problems).joined(separator: "; "),
                           decidedBy: row.decidedBy, reference: bug)
        }
        if !broken.isEmpty {
            return Verdict(.fail, "PROMISE BROKEN: " + (mismatched + problems).joined(separator: "; ") + "; " + log, decidedBy: row.decidedBy)
        }
        problems = mismatched + problems
        if !problems.isEmpty { return Verdict(.fail, problems.joined(separator: "; "), decidedBy: row.decidedBy) }
        let seen = row.observe.sorted(by: { $0.key < $1.key }).map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return Verdict(.pass, "\(seen) (\(why))", expected: seen, decidedBy: row.decidedBy)
    }
}
