import Foundation

/// KTAP v1 as kselftest writes it (tools/testing/selftests/kselftest.h):
///   ok N name / not ok N name / ok N name # SKIP reason / ok N name # XFAIL reason,
/// diagnostics as "# " lines before each result, and the kselftest "# Totals:" line.
/// Per case: outcome, expectation, reason, then `# data:`, `# accounted: N bytes`, `# iommu page:`,
/// `# case time:`, `# property k:`, `# kernel: <line>` per kernel log line and `# check <name>: ok|FAIL <detail>`
/// per check. After the results: `# hygiene <name>: ok|FAIL <detail>`, `# hygiene: <summary>`, incidents, totals.
enum KTAPReporter {
    /// A test name on a result line: one line, no `#` (which would start a directive).
    static func name(_ s: String, number: Int) -> String {
        var n = ReportText.oneLine(s).replacingOccurrences(of: "#", with: "_")
        n = n.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        return n.isEmpty ? "case_\(number)" : n
    }

    /// Text after a directive or in a diagnostic line: one line.
    static func text(_ s: String) -> String {
        ReportText.oneLine(s).trimmingCharacters(in: .whitespaces)
    }

    static func directive(_ head: String, _ reason: String) -> String {
        let r = text(reason)
        return r.isEmpty ? head : head + " " + r
    }

    static func render(_ report: RunReport) -> String {
        let h = report.header
        var out = ["KTAP version 1", "1..\(report.results.count)"]
        out.append("# kernel: \(text(h.kernelRelease))")
        out.append("# device: \(text(h.device))")
        out.append("# tool: \(text(h.tool))")
        if h.plan.count != report.results.count {
            out.append("# Planned cases != reported cases (\(h.plan.count) != \(report.results.count))")
        }
        for (i, c) in report.results.enumerated() {
            let n = i + 1
            for (k, v) in ReportText.diagnostics(c) + ReportText.details(c) { out.append("# \(text(k)): \(text(v))") }
            let nm = name(c.record.id, number: n)
            switch c.verdict.kind {
            case .pass: out.append("ok \(n) \(nm)")
            case .fail: out.append("not ok \(n) \(nm)")
            case .skip: out.append(directive("ok \(n) \(nm) # SKIP", c.verdict.reason))
            case .xfail: out.append(directive("ok \(n) \(nm) # XFAIL", c.verdict.reason))
            }
        }
        // End-of-run hygiene: each check, then a summary. A failed check is also a run incident
        // (RunReport puts it there), so it is printed below too and the run exits 1.
        for ch in report.hygiene ?? [] {
            out.append("# hygiene \(text(ch.name)): \(directive(ReportText.checkWord(ch), ch.detail))")
        }
        out.append("# hygiene: \(text(ReportText.hygieneSummary(report.hygiene)))")
        for i in report.incidents { out.append("# incident: \(text(i))") }
        out.append("# Totals: pass:\(report.count(.pass)) fail:\(report.count(.fail)) xfail:\(report.count(.xfail)) "
                   + "xpass:0 skip:\(report.count(.skip)) error:0")
        return out.joined(separator: "\n") + "\n"
    }
}
