import Foundation

/// A run as it fits a terminal: the matrix grid for one kernel (kinds down, backends across,
/// agreeing backends merged), split into several grids when it is wider than the screen, then
/// every failure with its details and kernel log lines. The per-case table stays in
/// `--format table` and the report files.
public enum GridSummary {
    static let short: [String: String] = [
        "type1": "t1", "type1v2": "t1v2", "iommufd-compat-type1": "compat-t1", "iommufd-compat-type1v2": "compat-t1v2",
        "iommufd": "iommufd", "mdev-map": "mdev-map", "mdev-pin": "mdev-pin",
    ]

    /// One case per part; equal parts said once ("EINVAL/EINVAL" → "EINVAL").
    static func text(_ cell: CrossKernelMatrix.Cell) -> String {
        let parts = cell.text.split(separator: "/").map(String.init)
        let t = Set(parts).count == 1 ? parts.first ?? "" : cell.text
        return t + (cell.verdict == .fail ? " ✗" : cell.verdict == .xfail ? " ~" : "")
    }

    static func paint(_ s: String, _ v: VerdictKind, _ color: Bool) -> String {
        guard color else { return s }
        let code = v == .fail ? "31" : v == .xfail ? "33" : v == .skip ? "2" : "32"
        return "\u{1b}[\(code)m\(s)\u{1b}[0m"
    }

    static func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s : s + String(repeating: " ", count: n - s.count)
    }

    static func clip(_ s: String, _ n: Int) -> String {
        s.count <= n ? s : String(s.prefix(max(0, n - 1))) + "…"
    }

    public static func render(_ report: RunReport, width: Int, color: Bool) -> String {
        let width = max(width, 40)
        let m = CrossKernelMatrix([("", report)])
        let kindWidth = min((m.kinds.map(\.count).max() ?? 4) + 1, width / 3)
        let labels = m.columns.map { c in c.members.map { short[$0.backend] ?? $0.backend }.joined(separator: ",") }
        let colWidth = m.columns.indices.map { j in
            max(labels[j].count, m.kinds.indices.map { text(m.cells[$0][j]).count }.max() ?? 0) + 2
        }
        // Columns in groups that fit beside the kind column.
        var groups: [[Int]] = []
        var used = kindWidth
        for j in m.columns.indices {
            let w = min(colWidth[j], width - kindWidth)
            if groups.isEmpty || used + w > width { groups.append([]); used = kindWidth }
            groups[groups.count - 1].append(j)
            used += w
        }
        var out = "\(report.header.kernelRelease): \(report.count(.pass)) passed, \(report.count(.fail)) failed, "
            + "\(report.count(.skip)) skipped, \(report.count(.xfail)) xfail\n"
        if m.columns.isEmpty { out += "(every case skipped)\n" }
        for g in groups {
            out += "\n" + pad("", kindWidth)
            for j in g { out += pad(clip(labels[j], min(colWidth[j], width - kindWidth) - 1), min(colWidth[j], width - kindWidth)) }
            out = out.trimmingTrailingSpaces() + "\n"
            for (i, k) in m.kinds.enumerated() {
                var line = pad(clip(k, kindWidth - 1), kindWidth)
                for j in g {
                    let w = min(colWidth[j], width - kindWidth)
                    let cell = m.cells[i][j]
                    let t = cell.cases.isEmpty ? "" : text(cell)
                    line += paint(pad(clip(t, w - 1), w), cell.verdict, color && !t.isEmpty)
                }
                out += line.trimmingTrailingSpaces() + "\n"
            }
        }
        let bad = report.results.filter { $0.verdict.kind == .fail }
        if !bad.isEmpty {
            out += "\nFailures:\n"
            for r in bad {
                out += wrap("\(paint("FAIL", .fail, color)) \(r.record.id): \(r.verdict.reason)", width, indent: "  ")
                for c in r.record.checks where !c.passed { out += wrap("check \(c.name): \(c.detail)", width, indent: "    ", first: "  ") }
                for l in r.record.kernelLog { out += wrap("kernel: \(l)", width, indent: "    ", first: "  ") }
            }
        }
        for i in report.incidents { out += wrap("incident: \(i)", width, indent: "  ") }
        return out
    }

    /// Hard-wraps one logical line to `width` columns (escape sequences count as nothing).
    static func wrap(_ s: String, _ width: Int, indent: String, first: String = "") -> String {
        var out = "", line = first, visible = first.count
        var inEscape = false
        for ch in s {
            line.append(ch)
            if ch == "\u{1b}" { inEscape = true; continue }
            if inEscape { if ch == "m" { inEscape = false }; continue }
            visible += 1
            if visible >= width { out += line + "\n"; line = indent; visible = indent.count }
        }
        if visible > indent.count || out.isEmpty { out += line + "\n" }
        return out
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}
