import Foundation
import Yams

/// One row of configs/skips.yaml: cases a kernel is expected to skip, and why.
public struct ExpectedSkip: Sendable, Equatable {
    public var line: String
    /// nil: every kind.
    public var kinds: [CaseKind]?
    public var backends: [BackendKind]?
    public var exceptBackends: [BackendKind] = []
    public var phases: [Phase]? = nil
    /// nil: whatever the event (and the plain cases); else only kind × event cases of these.
    public var events: [CaseEvent]? = nil
    public var kernel: KernelRange
    /// A glob on `uname -r` ("*+deb*-amd64"): kernels of one version built differently.
    public var release: String?
    /// The skip's reason must contain this; a skip for another reason is unexpected.
    public var reason: String
    public var decidedBy: String
    /// Kernel parameters the boot must have (`boot:`): the row holds on such a boot only.
    public var boot: [String]? = nil

    /// The row is about this case on this kernel and boot (whatever the case did).
    func applies(_ r: CaseRecord, _ v: KernelVersion, release rel: String, boot: BootParams = .none) -> Bool {
        guard boot.satisfies(self.boot) else { return false }
        if let k = kinds, !k.map(\.rawValue).contains(r.kind) { return false }
        if let b = backends, !b.map(\.rawValue).contains(r.backend) { return false }
        if exceptBackends.map(\.rawValue).contains(r.backend) { return false }
        if let p = phases, !p.contains(r.phase) { return false }
        if let e = events, !e.map(\.rawValue).contains(r.event ?? "") { return false }
        if let g = release, fnmatch(g, rel, 0) != 0 { return false }
        return kernel.contains(v)
    }
}

/// configs/skips.yaml: every skip a kernel is expected to give. Judged only with --strict-skips.
public struct ExpectedSkips: Sendable, Equatable {
    public var rows: [ExpectedSkip]

    public init(rows: [ExpectedSkip]) { self.rows = rows }

    public static func load(_ path: String) throws(ConfigError) -> ExpectedSkips {
        try parse(loadYAML(path), file: path)
    }

    public static func parse(_ root: Node, file: String) throws(ConfigError) -> ExpectedSkips {
        var f = try Fields(root, file, what: "the expected skips")
        try checkSchema(&f)
        var rows: [ExpectedSkip] = []
        for item in try f.list("skips") {
            var e = try Fields(item, file, what: "an expected skip")
            let loc = e.location
            var kinds: [CaseKind]?
            if let kn = try e.strings("kind") {
                kinds = []
                for n in kn { kinds?.append(try parseKind(n, loc)) }
            }
            let backends = try parseBackends(e.strings("backends"), loc)
            let except = try parseBackends(e.strings("except_backends"), loc) ?? []
            if backends != nil && !except.isEmpty { throw ConfigError("\(loc): give backends or except_backends, not both") }
            var phases: [Phase]?
            if let ps = try e.strings("phases") {
                phases = []
                for p in ps {
                    guard let ph = Phase(rawValue: p) else { throw ConfigError("\(loc): unknown phase \"\(p)\" (pre-device, device)") }
                    phases?.append(ph)
                }
            }
            let events = try e.strings("events").map { n throws(ConfigError) in try EventConfig.parseEvents(n, loc) }
            var kernel = KernelRange.any
            if let k = try e.string("kernel") {
                do { kernel = try KernelRange(parsing: k) } catch { throw ConfigError("\(loc): \(error.message)") }
            }
            let release = try e.string("release")
            if release?.isEmpty == true { throw ConfigError("\(loc): release must not be empty (a glob such as \"*+deb*-amd64\")") }
            guard let reason = try e.string("reason"), !reason.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw ConfigError("\(loc): an expected skip needs \"reason\" (text the skip's reason contains)")
            }
            guard let decided = try e.string("decided_by"), !decided.isEmpty else {
                throw ConfigError("\(loc): an expected skip needs \"decided_by\" (the kernel config or function that decides it)")
            }
            let boot = try parseBoot(e.strings("boot"), loc)
            try e.finish(allowed: ["kind", "backends", "except_backends", "phases", "events", "kernel", "release", "boot", "reason", "decided_by"])
            rows.append(ExpectedSkip(line: loc, kinds: kinds, backends: backends, exceptBackends: except, phases: phases, events: events,
                                     kernel: kernel, release: release, reason: reason, decidedBy: decided, boot: boot))
        }
        try f.finish(allowed: ["schema", "skips"])
        return ExpectedSkips(rows: rows)
    }

    /// The strict verdict: `verdict` (from the expectations) checked against the expected skips.
    /// A skip no row expects fails; so does a case a row expects to skip that ran (the row is
    /// stale or too wide, and would hide the next real skip). Pure.
    public func judge(_ r: CaseRecord, _ verdict: Verdict, kernel: KernelVersion, release: String, boot: BootParams = .none) -> Verdict {
        let rows = self.rows.filter { $0.applies(r, kernel, release: release, boot: boot) }
        switch r.outcome {
        case .skip(let why):
            if let row = rows.first(where: { why.contains($0.reason) }) {
                return Verdict(.skip, why, expected: "skip", decidedBy: row.decidedBy)
            }
            if let row = rows.first {
                return Verdict(.fail, "unexpected skip of \(r.id): \(why) (\(row.line) expects it to skip with \"\(row.reason)\")")
            }
            return Verdict(.fail, "unexpected skip of \(r.id): \(why) (no row in skips.yaml expects it on \(release))")
        case .lost:
            return verdict
        case .ok, .errno:
            guard let row = rows.first else { return verdict }
            var v = verdict
            let ran = "expected to skip (\(row.line): \(row.reason)) but it ran and got \(r.outcome); update \(row.line)"
            v.reason = v.kind == .fail ? ran + "; " + v.reason : ran
            v.kind = .fail
            return v
        }
    }
}
