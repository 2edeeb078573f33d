/// JUnit XML as CI systems (Jenkins, GitLab, GitHub test reporters) read it. A testcase per case
/// (time: the whole case when recorded, else map + unmap), then "run-hygiene" (the end-of-run checks,
/// failing if any failed) and "run-incidents" (every other run-level problem).
enum JUnitReporter {
    static func attr(_ s: String) -> String { "\"" + XML.escape(s, attribute: true) + "\"" }
    static func text(_ s: String) -> String { XML.escape(s, attribute: false) }

    static func xfailMessage(_ v: Verdict) -> String {
        if let ref = v.reference { return "XFAIL: known kernel bug reproduced: \(ref)" }
        return "XFAIL: known kernel bug reproduced (no reference given): \(v.reason)"
    }

    static func render(_ report: RunReport) -> String {
        let h = report.header
        // Failed hygiene checks fail "run-hygiene"; "run-incidents" carries every other incident.
        let incidents = ReportText.otherIncidents(report)
        let incidentCases = incidents.isEmpty ? 0 : 1
        let hygiene = report.hygiene ?? []
        let hygieneFailed = hygiene.filter { !$0.passed }
        let hygieneCases = hygiene.isEmpty ? 0 : 1
        let tests = report.results.count + incidentCases + hygieneCases
        let failures = report.count(.fail) + incidentCases + (hygieneFailed.isEmpty ? 0 : 1)
        let skipped = report.count(.skip) + report.count(.xfail)
        let caseNanos = report.results.reduce(UInt64(0)) { acc, c in
            let (s, o) = acc.addingReportingOverflow(ReportText.caseNanos(c.record))
            return o ? .max : s
        }
        let time = report.elapsedSeconds.flatMap(ReportText.seconds) ?? ReportText.seconds(nanos: caseNanos)
        let suiteName = "vfio-exerciser \(h.kernelRelease)"

        var out = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>"]
        let counts = "tests=\"\(tests)\" failures=\"\(failures)\" errors=\"0\" skipped=\"\(skipped)\" time=\"\(time)\""
        out.append("<testsuites name=\"vfio-exerciser\" \(counts)>")
        out.append("  <testsuite name=\(attr(suiteName)) \(counts)>")
        out.append("    <properties>")
        out.append("      <property name=\"kernel\" value=\(attr(h.kernelRelease))/>")
        out.append("      <property name=\"device\" value=\(attr(h.device))/>")
        out.append("      <property name=\"tool\" value=\(attr(h.tool))/>")
        out.append("      <property name=\"schema\" value=\"\(report.schema)\"/>")
        out.append("    </properties>")

        for c in report.results {
            let r = c.record
            let t = ReportText.seconds(nanos: ReportText.caseNanos(r))
            out.append("    <testcase classname=\(attr(r.backend)) name=\(attr(r.id)) time=\"\(t)\">")
            switch c.verdict.kind {
            case .pass:
                break
            case .fail:
                let type: String = { if case .lost = r.outcome { return "lost" } else { return "fail" } }()
                let body = ReportText.diagnostics(c).map { "\($0.0): \($0.1)" }.joined(separator: "\n")
                out.append("      <failure message=\(attr(c.verdict.reason)) type=\"\(type)\">\(text(body))</failure>")
            case .skip:
                out.append("      <skipped message=\(attr(c.verdict.reason))/>")
            case .xfail:
                out.append("      <skipped message=\(attr(xfailMessage(c.verdict)))/>")
            }
            var sys = [
                "outcome: \(r.outcome.description)",
                "expected: \(c.verdict.expected ?? "-")",
                "decided_by: \(c.verdict.decidedBy ?? "-")",
                "kind: \(r.kind)",
                "phase: \(r.phase.rawValue)",
                "size: \(formatSize(r.size))",
                "flags: \(ReportText.flags(r.flags))",
                "iova: \(ReportText.hex(r.iova))",
            ]
            if let n = r.mapNanos { sys.append("map: \(ReportText.micros(n)) µs") }
            if let n = r.unmapNanos { sys.append("unmap: \(ReportText.micros(n)) µs") }
            if let u = r.unmappedBytes { sys.append("unmapped: \(u)") }
            sys.append("accounted: \(r.accountedBytes.map { "\($0) bytes" } ?? "-")")
            sys.append("iommu page: \(r.iommuPageSize ?? "-")")
            sys.append("data: \(r.properties[ReportText.dataKey].map(ReportText.oneLine) ?? "-")")
            sys.append("case time: \(r.caseNanos.map { ReportText.seconds(nanos: $0) + " s" } ?? "-")")
            let props = ReportText.otherProperties(r.properties)
            for k in props.keys.sorted() { sys.append("property \(k): \(props[k]!)") }
            for l in r.kernelLog { sys.append("kernel: \(ReportText.oneLine(l))") }
            for ch in r.checks { sys.append("check \(ch.name): \(ch.passed ? "passed" : "FAILED") \(ch.detail)") }
            out.append("      <system-out>\(text(sys.joined(separator: "\n")))</system-out>")
            out.append("    </testcase>")
        }

        if hygieneCases > 0 {
            out.append("    <testcase classname=\"vfio-exerciser\" name=\"run-hygiene\" time=\"0.000000\">")
            if !hygieneFailed.isEmpty {
                let n = hygieneFailed.count
                let msg = "\(n) of \(hygiene.count) hygiene check\(hygiene.count == 1 ? "" : "s") failed: "
                    + hygieneFailed.map(\.name).joined(separator: ", ")
                let body = hygieneFailed.map { "\($0.name): \($0.detail)" }.joined(separator: "\n")
                out.append("      <failure message=\(attr(msg)) type=\"hygiene\">\(text(body))</failure>")
            }
            let sys = hygiene.map { "check \($0.name): \($0.passed ? "passed" : "FAILED") \($0.detail)" }
            out.append("      <system-out>\(text(sys.joined(separator: "\n")))</system-out>")
            out.append("    </testcase>")
        }
        if incidentCases > 0 {
            let n = incidents.count
            let msg = "\(n) run incident\(n == 1 ? "" : "s"): \(incidents[0])\(n > 1 ? " (and more)" : "")"
            out.append("    <testcase classname=\"vfio-exerciser\" name=\"run-incidents\" time=\"0.000000\">")
            out.append("      <failure message=\(attr(msg)) type=\"incident\">\(text(incidents.joined(separator: "\n")))</failure>")
            out.append("    </testcase>")
        }
        out.append("  </testsuite>")
        out.append("</testsuites>")
        return out.joined(separator: "\n") + "\n"
    }
}

/// XML 1.0 escaping for the JUnit report and the benchmark's SVG plots.
enum XML {
    /// Escapes text for XML 1.0 element content and attribute values. Characters XML 1.0 cannot
    /// carry at all (C0 controls other than tab/LF/CR, U+FFFE/U+FFFF) are written as a visible
    /// `\xNN`; tab/LF/CR are character references in attributes so they survive normalisation.
    static func escape(_ s: String, attribute: Bool) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for u in s.unicodeScalars {
            switch u {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\t", "\n", "\r":
                out += attribute ? "&#\(u.value);" : String(u)
            default:
                if u.value < 0x20 || u.value == 0xFFFE || u.value == 0xFFFF {
                    let h = String(u.value, radix: 16)
                    out += "\\x" + (h.count < 2 ? "0" : "") + h
                } else if (0x7F...0x9F).contains(u.value) {
                    out += "&#x\(String(u.value, radix: 16, uppercase: true));"
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out
    }

}
