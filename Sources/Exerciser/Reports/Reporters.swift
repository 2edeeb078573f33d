import Foundation

/// The output formats every run can be rendered in.
public enum ReportFormat: String, CaseIterable, Sendable {
    case table, json, ktap, junit
}

/// Renders a `RunReport`. Pure and deterministic: the same report always gives the same bytes,
/// and nothing but what is in the report (no clock, no locale, no environment) reaches the output.
public enum Reporter {
    public static func render(_ report: RunReport, format: ReportFormat, color: Bool) -> String {
        switch format {
        case .table: return TableReporter.render(report, color: color)
        case .json: return JSONReporter.render(report)
        case .ktap: return KTAPReporter.render(report)
        case .junit: return JUnitReporter.render(report)
        }
    }

    /// Reads back what `render(_:format: .json, color:)` wrote.
    public static func decodeJSON(_ data: Data) throws -> RunReport {
        try JSONReporter.decoder().decode(RunReport.self, from: data)
    }
}

// MARK: - JSON

enum JSONReporter {
    static let nonConforming = (positiveInfinity: "+Infinity", negativeInfinity: "-Infinity", nan: "NaN")

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        e.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: nonConforming.positiveInfinity, negativeInfinity: nonConforming.negativeInfinity,
            nan: nonConforming.nan)
        return e
    }

    static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: nonConforming.positiveInfinity, negativeInfinity: nonConforming.negativeInfinity,
            nan: nonConforming.nan)
        return d
    }

    static func render(_ report: RunReport) -> String {
        do {
            let data = try encoder().encode(report)
            return String(decoding: data, as: UTF8.self) + "\n"
        } catch {
            // Unreachable for RunReport (every float strategy is handled), but never crash a report.
            let msg = String(decoding: (try? JSONEncoder().encode("\(error)")) ?? Data("\"\"".utf8), as: UTF8.self)
            return "{\n  \"error\" : \(msg),\n  \"schema\" : \(RunReport.schemaVersion)\n}\n"
        }
    }
}

// MARK: - Shared formatting helpers

enum ReportText {
    static func verdictLabel(_ k: VerdictKind) -> String {
        switch k {
        case .pass: return "PASS"
        case .fail: return "FAIL"
        case .skip: return "SKIP"
        case .xfail: return "XFAIL"
        }
    }

    /// "rw" for read+write, "r" read-only, "w" write-only, "-" none; unknown flags are appended.
    static func flags(_ flags: [String]) -> String {
        var s = ""
        if flags.contains("read") { s += "r" }
        if flags.contains("write") { s += "w" }
        let other = flags.filter { $0 != "read" && $0 != "write" }
        if !other.isEmpty { s += (s.isEmpty ? "" : "+") + other.joined(separator: "+") }
        return s.isEmpty ? "-" : s
    }

    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    /// Nanoseconds as microseconds with one decimal, integer arithmetic only.
    static func micros(_ ns: UInt64?) -> String {
        guard let ns else { return "-" }
        let tenths = ns / 100 + (ns % 100 >= 50 ? 1 : 0)
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// Nanoseconds as seconds with six decimals, integer arithmetic only (JUnit `time`).
    static func seconds(nanos ns: UInt64) -> String {
        let us = ns / 1000 + (ns % 1000 >= 500 ? 1 : 0)
        let frac = String(us % 1_000_000)
        return "\(us / 1_000_000)." + String(repeating: "0", count: 6 - frac.count) + frac
    }

    static func seconds(_ s: Double) -> String? {
        guard s.isFinite, s >= 0, s < 1e9 else { return nil }
        return seconds(nanos: UInt64((s * 1e9).rounded()))
    }

    /// Nanoseconds as milliseconds with one decimal, integer arithmetic only.
    static func millis(_ ns: UInt64?) -> String {
        guard let ns else { return "-" }
        let tenths = ns / 100_000 + (ns % 100_000 >= 50_000 ? 1 : 0)
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// The time a case took: its whole wall time when recorded, else map + unmap.
    static func caseNanos(_ r: CaseRecord) -> UInt64 {
        if let n = r.caseNanos { return n }
        let (sum, overflow) = (r.mapNanos ?? 0).addingReportingOverflow(r.unmapNanos ?? 0)
        return overflow ? .max : sum
    }

    /// The property key holding the data-check summary ("ok (data-ring)", "not checkable: ...", "mismatch").
    static let dataKey = "data"
    static let notCheckablePrefix = "not checkable"

    /// The data-check summary in a word: "ok", "MISMATCH", "n/a" (not checkable), "-" (none recorded).
    static func dataWord(_ summary: String?) -> String {
        guard let s = summary else { return "-" }
        if s == "ok" || s.hasPrefix("ok ") || s.hasPrefix("ok(") { return "ok" }
        if s.hasPrefix("mismatch") { return "MISMATCH" }
        if s.hasPrefix(notCheckablePrefix) { return "n/a" }
        return truncate(oneLine(s), 12)
    }

    /// Why the data could not be checked ("device MMIO"), or nil when it was (or nothing was recorded).
    static func notCheckableReason(_ summary: String?) -> String? {
        guard let s = summary, s.hasPrefix(notCheckablePrefix) else { return nil }
        var r = s.dropFirst(notCheckablePrefix.count)
        if r.first == ":" { r = r.dropFirst() }
        let t = r.trimmingCharacters(in: .whitespaces)
        return t.isEmpty ? "no reason given" : t
    }

    /// Signed bytes through `formatSize` ("64K", "-4K", "0").
    static func signedSize(_ n: Int64) -> String {
        n < 0 ? "-" + formatSize(n.magnitude) : formatSize(UInt64(n))
    }

    /// Properties other than the data summary, which every format shows on its own.
    static func otherProperties(_ p: [String: String]) -> [String: String] {
        p.filter { $0.key != dataKey }
    }

    static func checkWord(_ c: Check) -> String { c.passed ? "ok" : "FAIL" }

    /// The incidents `RunReport` derived from failed hygiene checks, exactly as it words them.
    static func hygieneIncidents(_ report: RunReport) -> Set<String> {
        Set((report.hygiene ?? []).filter { !$0.passed }.map { "hygiene: \($0.name): \($0.detail)" })
    }

    /// Incidents that are not a failed hygiene check (formats that show hygiene on its own use these).
    static func otherIncidents(_ report: RunReport) -> [String] {
        let derived = hygieneIncidents(report)
        return report.incidents.filter { !derived.contains($0) }
    }

    /// "ok (fds, maps, ...)", "FAIL (fds)" or "not checked".
    static func hygieneSummary(_ hygiene: [Check]?) -> String {
        guard let h = hygiene, !h.isEmpty else { return "not checked" }
        let failed = h.filter { !$0.passed }
        if failed.isEmpty { return "ok (\(h.map(\.name).joined(separator: ", ")))" }
        return "FAIL (\(failed.map(\.name).joined(separator: ", ")))"
    }

    /// Failed checks a failing verdict's reason does not already spell out ("name: detail").
    static func unmentionedFailedChecks(_ c: CaseResult) -> [Check] {
        c.record.checks.filter { !$0.passed && (c.verdict.kind != .fail || !c.verdict.reason.contains("\($0.name): \($0.detail)")) }
    }

    static func outcomeWord(_ o: Outcome) -> String {
        switch o {
        case .ok: return "ok"
        case .errno(let e): return e
        case .skip: return "skip"
        case .lost: return "lost"
        }
    }

    static func properties(_ p: [String: String]) -> String {
        p.keys.sorted().map { "\($0)=\(p[$0]!)" }.joined(separator: ",")
    }

    static func isControl(_ u: Unicode.Scalar) -> Bool {
        u.value < 0x20 || (0x7F...0x9F).contains(u.value)
    }

    /// One line of plain text: tab/CR/LF become spaces, other control characters (ESC among them)
    /// are written as visible `\xNN` so nothing from the report can drive a terminal.
    static func oneLine(_ s: String) -> String {
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            if u == "\n" || u == "\r" || u == "\t" {
                out.append(" ")
            } else if isControl(u) {
                out.append(contentsOf: "\\x".unicodeScalars)
                let h = String(u.value, radix: 16)
                out.append(contentsOf: ((h.count < 2 ? "0" : "") + h).unicodeScalars)
            } else {
                out.append(u)
            }
        }
        return String(out)
    }

    static func truncate(_ s: String, _ max: Int) -> String {
        s.count <= max ? s : String(s.prefix(max - 1)) + "…"
    }

    /// Diagnostics shared by KTAP and JUnit: outcome, expected, decided_by, failed checks, reason.
    static func diagnostics(_ c: CaseResult) -> [(String, String)] {
        var d: [(String, String)] = [("outcome", c.record.outcome.description)]
        if let e = c.verdict.expected { d.append(("expected", e)) }
        if let b = c.verdict.decidedBy { d.append(("decided_by", b)) }
        if let r = c.verdict.reference { d.append(("reference", r)) }
        for ch in c.record.checks where !ch.passed { d.append(("failed check", "\(ch.name): \(ch.detail)")) }
        if !c.record.cleanupOK { d.append(("cleanup", "failed")) }
        if c.verdict.kind != .pass { d.append(("reason", c.verdict.reason)) }
        return d
    }

    /// Everything else measured for a case, for KTAP diagnostics: data summary, accounting, IOMMU page
    /// size, case time, properties, kernel log lines and every check (passed or not).
    static func details(_ c: CaseResult) -> [(String, String)] {
        let r = c.record
        var d: [(String, String)] = []
        if let data = r.properties[dataKey] { d.append(("data", data)) }
        if let a = r.accountedBytes { d.append(("accounted", "\(a) bytes")) }
        if let p = r.iommuPageSize { d.append(("iommu page", p)) }
        if let n = r.caseNanos { d.append(("case time", "\(millis(n)) ms")) }
        let props = otherProperties(r.properties)
        for k in props.keys.sorted() { d.append(("property \(k)", props[k]!)) }
        for l in r.kernelLog { d.append(("kernel", l)) }
        for ch in r.checks { d.append(("check \(ch.name)", "\(checkWord(ch)) \(ch.detail)")) }
        return d
    }
}
