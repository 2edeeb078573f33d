import Foundation
import VFIO

/// Where configs/ lives: explicit, $VFIO_EXERCISER_CONFIGS, ./configs, next to the binary, /etc.
public enum ConfigLocator {
    public static func find(_ explicit: String?) throws(UsageError) -> String {
        if let e = explicit { return e }
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["VFIO_EXERCISER_CONFIGS"] { candidates.append(env) }
        candidates.append(FileManager.default.currentDirectoryPath + "/configs")
        let exe = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath().deletingLastPathComponent()
        var dir = exe
        for _ in 0..<4 {
            candidates.append(dir.appendingPathComponent("configs").path)
            dir = dir.deletingLastPathComponent()
        }
        candidates.append("/etc/vfio-exerciser")
        for c in candidates where FileManager.default.fileExists(atPath: c + "/expectations.yaml") { return c }
        throw UsageError("no configs directory with expectations.yaml found (use --configs DIR)")
    }
}

/// Turns records into a judged report: the same for `run` on this machine and `vm` on the host.
public struct Judge {
    public var expectations: Expectations
    /// Set with --strict-skips: every skip must be expected, every expected skip must happen.
    public var skips: ExpectedSkips?
    /// Kind × event cases are judged by configs/events.yaml (Events/).
    public var events: EventConfig

    public init(expectations: Expectations, strictSkips skips: ExpectedSkips? = nil, events: EventConfig = EventConfig()) {
        self.expectations = expectations
        self.skips = skips
        self.events = events
    }

    public func verdict(_ r: CaseRecord, release: String, boot: BootParams = .none) -> Verdict {
        let kernel = KernelVersion(release: release) ?? KernelVersion(0, 0)
        let v = r.event == nil ? expectations.judge(r, kernel: kernel, boot: boot) : events.judge(r, kernel: kernel, boot: boot)
        return skips?.judge(r, v, kernel: kernel, release: release, boot: boot) ?? v
    }

    public func report(header: RunHeader, records: [CaseRecord], incidents: [String] = [], elapsed: Double? = nil,
                       hygiene: [Check]? = nil) -> RunReport {
        let boot = header.cmdline.map(BootParams.init(cmdline:)) ?? .none
        var results = records.map { CaseResult(record: $0, verdict: verdict($0, release: header.kernelRelease, boot: boot)) }
        // A planned case with no record was lost (crash, hang, panic): a failure, named.
        let seen = Set(records.map(\.id))
        let why = incidents.first ?? "the run ended before it"
        for id in header.plan where !seen.contains(id) {
            let parts = id.split(separator: "/")
            var rec = CaseRecord(id: id, backend: parts.first.map(String.init) ?? "?",
                                 kind: parts.count > 1 ? String(parts[1].prefix { $0 != "@" && $0 != "[" }) : "?",
                                 phase: id.hasSuffix("@pre-device") ? .preDevice : .device,
                                 size: 0, flags: [], iova: 0, outcome: .lost(why), cleanupOK: false)
            if let plus = id.lastIndex(of: "+") { rec.event = String(id[id.index(after: plus)...]) }
            results.append(CaseResult(record: rec, verdict: verdict(rec, release: header.kernelRelease, boot: boot)))
        }
        return RunReport(header: header, results: results, incidents: incidents, elapsedSeconds: elapsed, hygiene: hygiene)
    }
}

public func kernelRelease() -> String {
    var u = utsname()
    uname(&u)
    return withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

public let toolVersion = "vfio-exerciser 0.1.0"
