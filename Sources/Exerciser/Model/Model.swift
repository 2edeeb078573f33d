import VFIO
import SystemPackage

/// What the kernel did with one case: "ok", an errno symbol, or a skip/crash.
public enum Outcome: Codable, Sendable, Equatable, CustomStringConvertible {
    case ok
    case errno(String)
    case skip(String)
    /// The case never produced an outcome (guest crash, timeout, child killed).
    case lost(String)

    public var description: String {
        switch self {
        case .ok: return "ok"
        case .errno(let e): return e
        case .skip(let r): return "skip: \(r)"
        case .lost(let r): return "lost: \(r)"
        }
    }

    /// The token an expectation compares against ("ok" / "EFAULT").
    public var token: String? {
        switch self {
        case .ok: return "ok"
        case .errno(let e): return e
        case .skip, .lost: return nil
        }
    }

    public init(_ result: Result<Void, Errno>) {
        switch result {
        case .success: self = .ok
        case .failure(let e): self = .errno(e.symbol)
        }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        if s == "ok" { self = .ok }
        else if s.hasPrefix("skip: ") { self = .skip(String(s.dropFirst(6))) }
        else if s.hasPrefix("lost: ") { self = .lost(String(s.dropFirst(6))) }
        else { self = .errno(s) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// When a case runs relative to opening the device: an IOMMU domain may exist only after.
public enum Phase: String, Codable, Sendable, CaseIterable {
    case preDevice = "pre-device"
    case device
}

/// A named check on a value the kernel handed back (bytes unmapped, data read back, ...).
public struct Check: Codable, Sendable, Equatable {
    public var name: String
    public var passed: Bool
    public var detail: String
    public init(_ name: String, _ passed: Bool, _ detail: String) {
        self.name = name
        self.passed = passed
        self.detail = detail
    }
}

/// Everything measured for one case. Written as one JSON line when the case ends.
public struct CaseRecord: Codable, Sendable, Equatable {
    public var id: String
    public var backend: String
    public var kind: String
    public var phase: Phase
    public var size: UInt64
    public var flags: [String]
    public var iova: UInt64
    public var outcome: Outcome
    public var mapNanos: UInt64?
    public var unmapNanos: UInt64?
    public var unmappedBytes: UInt64?
    /// Wall time of the whole case: build, map, data check, unmap, clean-up.
    public var caseNanos: UInt64?
    /// The data check: which engine, how many bytes of the mapping it verified, how long it took.
    public var dataEngine: String?
    public var dataBytes: UInt64?
    public var dataNanos: UInt64?
    public var cleanupOK: Bool
    /// Bytes the kernel charged to the process (VmLck + VmPin) between before and after map.
    public var accountedBytes: Int64?
    /// Level the IOMMU mapped the IOVA at ("4K", "2M", "1G"), from the Intel IOMMU's debugfs.
    public var iommuPageSize: String?
    /// Kernel log lines (/dev/kmsg) that appeared while the case ran and matter to it.
    public var kernelLog: [String]
    /// Facts about the backing worth reporting ("huge_page": "yes", "bar": "BAR0").
    public var properties: [String: String]
    public var checks: [Check]
    // --- events (issue 13): the event a kind × event case applied, and what each side saw.
    public var event: String? = nil
    public var observations: [String: String]? = nil
    // --- end events

    public init(id: String, backend: String, kind: String, phase: Phase, size: UInt64, flags: [String], iova: UInt64,
                outcome: Outcome, mapNanos: UInt64? = nil, unmapNanos: UInt64? = nil, unmappedBytes: UInt64? = nil,
                cleanupOK: Bool = true, properties: [String: String] = [:], checks: [Check] = [],
                accountedBytes: Int64? = nil, iommuPageSize: String? = nil, kernelLog: [String] = []) {
        self.id = id
        self.backend = backend
        self.kind = kind
        self.phase = phase
        self.size = size
        self.flags = flags
        self.iova = iova
        self.outcome = outcome
        self.mapNanos = mapNanos
        self.unmapNanos = unmapNanos
        self.unmappedBytes = unmappedBytes
        self.cleanupOK = cleanupOK
        self.properties = properties
        self.checks = checks
        self.accountedBytes = accountedBytes
        self.iommuPageSize = iommuPageSize
        self.kernelLog = kernelLog
    }
}

/// What the machine under test is; the first line of a result stream.
public struct RunHeader: Codable, Sendable, Equatable {
    public var tool: String
    public var kernelRelease: String
    public var device: String
    /// Case ids in the order they will run, so lost cases can be named.
    public var plan: [String]
    /// The kernel command line (/proc/cmdline): rows with `boot:` are judged against it.
    public var cmdline: String?
    public init(tool: String, kernelRelease: String, device: String, plan: [String], cmdline: String? = nil) {
        self.tool = tool
        self.kernelRelease = kernelRelease
        self.device = device
        self.plan = plan
        self.cmdline = cmdline
    }
}

public enum VerdictKind: String, Codable, Sendable {
    case pass, fail, skip
    /// Known kernel bug reproduced as documented (kselftest XFAIL).
    case xfail
}

public struct Verdict: Codable, Sendable, Equatable {
    public var kind: VerdictKind
    public var reason: String
    public var expected: String?
    public var decidedBy: String?
    public var reference: String?
    public init(_ kind: VerdictKind, _ reason: String, expected: String? = nil, decidedBy: String? = nil, reference: String? = nil) {
        self.kind = kind
        self.reason = reason
        self.expected = expected
        self.decidedBy = decidedBy
        self.reference = reference
    }
}

public struct CaseResult: Codable, Sendable, Equatable {
    public var record: CaseRecord
    public var verdict: Verdict
    public init(record: CaseRecord, verdict: Verdict) {
        self.record = record
        self.verdict = verdict
    }
}

/// One run: the document the JSON report writes and every other format renders.
public struct RunReport: Codable, Sendable, Equatable {
    public static let schemaVersion = 1
    public var schema: Int = RunReport.schemaVersion
    public var header: RunHeader
    public var results: [CaseResult]
    /// Run-level problems (guest panic, timeout) that are not any one case.
    public var incidents: [String]
    public var elapsedSeconds: Double?
    /// End-of-run checks that the run left nothing behind (fds, mappings, locked memory, pools).
    public var hygiene: [Check]?

    public init(header: RunHeader, results: [CaseResult], incidents: [String] = [], elapsedSeconds: Double? = nil,
                hygiene: [Check]? = nil) {
        self.header = header
        self.results = results
        self.incidents = incidents + (hygiene ?? []).filter { !$0.passed }.map { "hygiene: \($0.name): \($0.detail)" }
        self.elapsedSeconds = elapsedSeconds
        self.hygiene = hygiene
    }

    public func count(_ k: VerdictKind) -> Int { results.filter { $0.verdict.kind == k }.count }

    /// kselftest exit codes: 0 pass, 1 any failure, 4 all skipped.
    public var exitCode: Int32 {
        if count(.fail) > 0 || !incidents.isEmpty { return 1 }
        if !results.isEmpty && count(.skip) == results.count { return 4 }
        if results.isEmpty { return 1 }
        return 0
    }
}
