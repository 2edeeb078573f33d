/// Human-readable aligned table. Colour (ANSI SGR) is applied to the verdict cell only, after
/// widths are computed from the plain text, so alignment never depends on escape codes.
enum TableReporter {
    static let separator = "  "
    static let reasonWidth = 72

    struct Column {
        var title: String
        var rightAligned = false
    }

    static let columns: [Column] = [
        Column(title: "VERDICT"), Column(title: "ID"), Column(title: "BACKEND"), Column(title: "KIND"),
        Column(title: "PHASE"), Column(title: "SIZE", rightAligned: true), Column(title: "FLAGS"),
        Column(title: "IOVA", rightAligned: true), Column(title: "OUTCOME"), Column(title: "EXPECTED"),
        Column(title: "MAP µs", rightAligned: true), Column(title: "UNMAP µs", rightAligned: true),
        Column(title: "UNMAPPED", rightAligned: true), Column(title: "PROPERTIES"), Column(title: "REASON"),
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
            t.properties(r.properties), reason,
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

        let failures = report.results.filter { $0.verdict.kind == .fail }
        if !failures.isEmpty {
            out.append("")
            out.append("Failures:")
            for f in failures {
                var s = "  \(ReportText.oneLine(f.record.id)): \(ReportText.oneLine(f.verdict.reason))"
                if let d = f.verdict.decidedBy { s += " [decided by \(ReportText.oneLine(d))]" }
                out.append(s)
            }
        }
        if !report.incidents.isEmpty {
            out.append("")
            out.append("Run incidents:")
            for i in report.incidents { out.append("  \(ReportText.oneLine(i))") }
        }
        return out.joined(separator: "\n") + "\n"
    }
}
