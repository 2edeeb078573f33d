/// Human-readable aligned table. Colour (ANSI SGR) is applied to the verdict cell only, after
/// widths are computed from the plain text, so alignment never depends on escape codes.
enum TableReporter {
    static let separator = "  "
    /// The reason cell is cut to this many characters; "Failures:" below lists every reason in full.
    static let reasonWidth = 48

    struct Column {
        var title: String
        var rightAligned = false
    }

    static let columns: [Column] = [
        Column(title: "VERDICT"), Column(title: "ID"), Column(title: "BACKEND"), Column(title: "KIND"),
        Column(title: "PHASE"), Column(title: "SIZE", rightAligned: true), Column(title: "FLAGS"),
        Column(title: "IOVA", rightAligned: true), Column(title: "OUTCOME"), Column(title: "EXPECTED"),
        Column(title: "MAP µs", rightAligned: true), Column(title: "UNMAP µs", rightAligned: true),
        Column(title: "UNMAPPED", rightAligned: true), Column(title: "ACCT", rightAligned: true),
        Column(title: "IOMMU PG"), Column(title: "DATA"), Column(title: "CASE ms", rightAligned: true),
        Column(title: "PROPERTIES"), Column(title: "REASON"),
    ]

    static func sgr(_ k: VerdictKind) -> String {
        switch k {
        case .pass: return "\u{1B}[32m"   // green
        case .fail: return "\u{1B}[1;31m" // bold red
        case .skip: return "\u{1B}[33m"   // yellow
        case .xfail: return "\u{1B}[36m"  // cyan
        }
    }

    static let reset = "\u{1B}[0m"

    static func cells(_ c: CaseResult) -> [String] {
        let r = c.record
        let t = ReportText.self
        let reason = c.verdict.kind == .pass ? "" : t.truncate(t.oneLine(c.verdict.reason), reasonWidth)
        let raw = [
            t.verdictLabel(c.verdict.kind), r.id, r.backend, r.kind, r.phase.rawValue, formatSize(r.size),
            t.flags(r.flags), t.hex(r.iova), t.outcomeWord(r.outcome), c.verdict.expected ?? "-",
            t.micros(r.mapNanos), t.micros(r.unmapNanos), r.unmappedBytes.map(formatSize) ?? "-",
            r.accountedBytes.map(t.signedSize) ?? "-", r.iommuPageSize ?? "-", t.dataWord(r.properties[t.dataKey]),
            t.millis(r.caseNanos), t.properties(t.otherProperties(r.properties)), reason,
        ]
        return raw.map { t.oneLine($0) }.map { $0.isEmpty ? "-" : $0 }
    }

    static func pad(_ s: String, _ width: Int, right: Bool) -> String {
        let fill = String(repeating: " ", count: max(0, width - s.count))
        return right ? fill + s : s + fill
    }

    static func render(_ report: RunReport, color: Bool) -> String {
        let h = report.header
        var out: [String] = [
            "kernel: \(ReportText.oneLine(h.kernelRelease))",
            "device: \(ReportText.oneLine(h.device))",
            "tool:   \(ReportText.oneLine(h.tool))",
        ]
        if let e = report.elapsedSeconds, let s = ReportText.seconds(e) { out.append("elapsed: \(s) s") }
        out.append("")

        let rows = report.results.map { (kind: $0.verdict.kind, cells: cells($0)) }
        var widths = columns.map { $0.title.count }
        for row in rows {
            for (i, cell) in row.cells.enumerated() { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String], verdict: VerdictKind?) -> String {
            var parts: [String] = []
            for (i, cell) in cells.enumerated() {
                var p = pad(cell, widths[i], right: columns[i].rightAligned)
                if i == 0, color, let v = verdict {
                    // Colour the text, not the padding: visible width is unchanged.
                    p = sgr(v) + cell + reset + String(repeating: " ", count: widths[i] - cell.count)
                }
                parts.append(p)
            }
            return parts.joined(separator: separator)
        }
        out.append(line(columns.map(\.title), verdict: nil))
        out.append(widths.map { String(repeating: "-", count: $0) }.joined(separator: separator))
        for row in rows { out.append(line(row.cells, verdict: row.kind)) }
        out.append("")

        out.append("\(report.count(.pass)) passed, \(report.count(.fail)) failed, "
                   + "\(report.count(.skip)) skipped, \(report.count(.xfail)) xfail")
        if h.plan.count != report.results.count {
            out.append("note: \(h.plan.count) cases planned, \(report.results.count) reported")
        }
        out.append(contentsOf: hygiene(report.hygiene))

        let t = ReportText.self
        // Failed checks the reason does not spell out (a lost case's clean-up, say) go under it.
        let failures = report.results.filter { $0.verdict.kind == .fail }
        if !failures.isEmpty {
            out.append("")
            out.append("Failures:")
            for f in failures {
                var s = "  \(t.oneLine(f.record.id)): \(t.oneLine(f.verdict.reason))"
                if let d = f.verdict.decidedBy { s += " [decided by \(t.oneLine(d))]" }
                out.append(s)
                for ch in t.unmentionedFailedChecks(f) { out.append("    check \(t.oneLine(ch.name)): FAIL \(t.oneLine(ch.detail))") }
            }
        }
        let otherFailedChecks = report.results.filter { $0.verdict.kind != .fail && !t.unmentionedFailedChecks($0).isEmpty }
        if !otherFailedChecks.isEmpty {
            out.append("")
            out.append("Failed checks (in cases not failed):")
            for c in otherFailedChecks {
                for ch in t.unmentionedFailedChecks(c) {
                    out.append("  \(t.oneLine(c.record.id)): check \(t.oneLine(ch.name)): FAIL \(t.oneLine(ch.detail))")
                }
            }
        }
        let logged = report.results.filter { !$0.record.kernelLog.isEmpty }
        if !logged.isEmpty {
            out.append("")
            out.append("Kernel log:")
            for c in logged {
                out.append("  \(t.oneLine(c.record.id)):")
                for l in c.record.kernelLog { out.append("    \(t.oneLine(l))") }
            }
        }
        // "n/a" in the DATA column: why, once per reason, in first-seen order.
        var reasons: [String] = [], counts: [String: Int] = [:]
        for c in report.results {
            guard let why = t.notCheckableReason(c.record.properties[t.dataKey]) else { continue }
            if counts[why] == nil { reasons.append(why) }
            counts[why, default: 0] += 1
        }
        if !reasons.isEmpty {
            out.append("")
            out.append("Data not checkable:")
            for why in reasons {
                let n = counts[why]!
                out.append("  \(t.oneLine(why)): \(n) case\(n == 1 ? "" : "s")")
            }
        }
        // Failed hygiene checks are incidents too; they are listed by the hygiene line, not again here.
        let incidents = t.otherIncidents(report)
        if !incidents.isEmpty {
            out.append("")
            out.append("Run incidents:")
            for i in incidents { out.append("  \(t.oneLine(i))") }
        }
        return out.joined(separator: "\n") + "\n"
    }

    /// "hygiene: ok (fds, maps, ...)", or "hygiene: FAIL (...)" and a line per failing check.
    static func hygiene(_ checks: [Check]?) -> [String] {
        var lines = ["hygiene: \(ReportText.oneLine(ReportText.hygieneSummary(checks)))"]
        for ch in checks ?? [] where !ch.passed {
            lines.append("  \(ReportText.oneLine(ch.name)): \(ReportText.oneLine(ch.detail))")
        }
        return lines
    }
}
