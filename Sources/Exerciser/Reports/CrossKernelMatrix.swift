import Foundation

/// Kinds down, one column per kernel and backend across, a short outcome per cell: several runs
/// read side by side. Columns whose every case skipped are left out; columns that agree on every
/// cell are merged into the first of them ("debian-6.12, debian-7.3 type1v2").
public struct CrossKernelMatrix: Sendable {
    public struct Column: Sendable {
        /// (run, backend) pairs that agree on every cell.
        public var members: [(run: String, backend: String)]
        /// "debian-6.1 type1, type1v2", or "debian-6.1, debian-6.12 mdev-map" when the same
        /// backends agree across runs, else each pair.
        public var label: String {
            var runs: [String] = [], backends: [String] = []
            for m in members {
                if !runs.contains(m.run) { runs.append(m.run) }
                if !backends.contains(m.backend) { backends.append(m.backend) }
            }
            if runs.count * backends.count == members.count {
                return runs.joined(separator: ", ") + " " + backends.joined(separator: ", ")
            }
            return members.map { "\($0.run) \($0.backend)" }.joined(separator: "; ")
        }
    }

    public struct Cell: Equatable, Sendable {
        /// e.g. "ok+data", "EINVAL/EINVAL" (one part per case of the kind: phases, flag variants).
        public var text: String
        /// The worst verdict in the cell: fail > xfail > pass > skip.
        public var verdict: VerdictKind
        public var cases: [CaseResult]
        public static func == (a: Cell, b: Cell) -> Bool { a.text == b.text && a.verdict == b.verdict }
    }

    public var runs: [(name: String, release: String)]
    public var columns: [Column] = []
    public var kinds: [String] = []
    /// cells[kind][column]
    public var cells: [[Cell]] = []

    /// `runs`: a name per report (e.g. its directory: "debian-6.1") and the report.
    public init(_ reports: [(name: String, report: RunReport)]) {
        runs = reports.map { ($0.name, $0.report.header.kernelRelease) }
        var order: [String] = []
        for (_, r) in reports { for c in r.results where !order.contains(Self.row(c.record)) { order.append(Self.row(c.record)) } }
        let rank = Dictionary(CaseKind.allCases.enumerated().map { ($1.rawValue, $0) }, uniquingKeysWith: { x, _ in x })
        // Kinds in list order, each kind's events after the kind itself, in run order.
        let base = { (row: String) in String(row.split(separator: " ").first ?? "") }
        kinds = order.enumerated().sorted {
            let (a, b) = (rank[base($0.element)] ?? Int.max, rank[base($1.element)] ?? Int.max)
            let (ea, eb) = ($0.element.contains(" × ") ? 1 : 0, $1.element.contains(" × ") ? 1 : 0)
            return (ea, a, $0.offset) < (eb, b, $1.offset)
        }.map(\.element)
        var cols: [(Column, [Cell])] = []
        for (name, r) in reports {
            let backends = BackendKind.allCases.map(\.rawValue).filter { b in r.results.contains { $0.record.backend == b } }
            for b in backends {
                let col = kinds.map { k in Self.cell(r.results.filter { $0.record.backend == b && Self.row($0.record) == k }) }
                if col.allSatisfy({ $0.verdict == .skip }) { continue }
                if let same = cols.firstIndex(where: { $0.1 == col }) {
                    cols[same].0.members.append((name, b))
                } else {
                    cols.append((Column(members: [(name, b)]), col))
                }
            }
        }
        columns = cols.map(\.0)
        cells = kinds.indices.map { i in cols.map { $0.1[i] } }
    }

    /// What each side saw after the event: "device_write/cpu_write" (the process's view of the
    /// device's write, the device's of the process's), the child's after a fork, and the event's
    /// own result when it was not ok.
    static func eventText(_ o: [String: String], outcome: Outcome) -> String {
        guard outcome == .ok else { return outcome.description }
        // Dirty tracking: what the bitmap said (and the unmap's bitmap), after the start's result.
        if let d = o["dirty_bitmap"] {
            var s = "dirty:\(d)" + (o["unmap_bitmap"].map { " unmap:\($0)" } ?? "")
            if let e = o["event"], e != "ok" { s = "\(e) " + s }
            return s
        }
        var s = "\(o["device_write"] ?? "·")/\(o["cpu_write"] ?? "·")"
        // After a fork: what the child saw of the device's write / what the device read of the child's.
        let child = [o["child_sees"], o["child_write"]].compactMap { $0 }
        if !child.isEmpty { s += " child:" + child.joined(separator: "/") }
        // After KSM: what became of the unpinned twin / of the pinned pages.
        if let t = o["twin"], let p = o["pinned"] { s += " ksm:\(t)/\(p)" }
        if let e = o["event"], e != "ok" { s = "\(e) " + s }
        return s
    }

    /// The row a case belongs to: its kind, or "kind × event" for a kind × event case.
    static func row(_ r: CaseRecord) -> String { r.event.map { "\(r.kind) × \($0)" } ?? r.kind }

    static func cell(_ cases: [CaseResult]) -> Cell {
        guard !cases.isEmpty else { return Cell(text: "", verdict: .skip, cases: []) }
        let ran = cases.filter { $0.verdict.kind != .skip }
        guard !ran.isEmpty else { return Cell(text: "-", verdict: .skip, cases: cases) }
        let parts = cases.map { c -> String in
            if c.verdict.kind == .skip { return "-" }
            if c.record.event != nil, let o = c.record.observations { return eventText(o, outcome: c.record.outcome) }
            var s = c.record.outcome.description
            if c.record.properties["data"]?.hasPrefix("ok") == true { s += "+data" }
            return s
        }
        let worst: VerdictKind = ran.contains { $0.verdict.kind == .fail } ? .fail
            : ran.contains { $0.verdict.kind == .xfail } ? .xfail : .pass
        return Cell(text: parts.joined(separator: "/"), verdict: worst, cases: cases)
    }

    static func mark(_ v: VerdictKind) -> String { v == .fail ? " ✗" : v == .xfail ? " (xfail)" : "" }

    /// The table, then the kernel each run booted (below the table: a new package version is
    /// not a change of outcome).
    public func markdown() -> String {
        var s = "| kind | " + columns.map(\.label).joined(separator: " | ") + " |\n"
        s += "|---|" + String(repeating: "---|", count: columns.count) + "\n"
        for (i, k) in kinds.enumerated() {
            s += "| \(k) | " + cells[i].map { $0.text.isEmpty ? " " : $0.text + Self.mark($0.verdict) }.joined(separator: " | ") + " |\n"
        }
        return s + "\n" + runs.map { "\($0.name): \($0.release)" }.joined(separator: "; ") + "\n"
    }

    /// The table part of `markdown()` only, for comparing with a committed copy.
    public static func tableLines(_ text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { $0.hasPrefix("|") }
    }

    public func html() -> String {
        let colour: [VerdictKind: String] = [.pass: "#d8f0d8", .fail: "#f6c6c6", .xfail: "#f6e3b4", .skip: "#eeeeee"]
        var s = """
        <!DOCTYPE html>
        <html><head><meta charset="utf-8"><title>vfio-exerciser matrix</title><style>
        body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse}
        td,th{border:1px solid #bbb;padding:2px 6px;vertical-align:top} th{background:#f4f4f4}
        details summary{cursor:pointer} pre{white-space:pre-wrap;max-width:40em;font-size:11px}
        </style></head><body>
        <h1>vfio-exerciser: outcome per kind, kernel and backend</h1>
        <p>\(XML.escape(runs.map { "\($0.name): \($0.release)" }.joined(separator: "; "), attribute: false))</p>
        <table><tr><th>kind</th>
        """
        for c in columns { s += "<th>\(XML.escape(c.label, attribute: false))</th>" }
        s += "</tr>\n"
        for (i, k) in kinds.enumerated() {
            s += "<tr><th>\(XML.escape(k, attribute: false))</th>"
            for cell in cells[i] {
                s += "<td style=\"background:\(colour[cell.verdict] ?? "#fff")\">"
                if cell.cases.isEmpty { s += "</td>"; continue }
                s += "<details><summary>\(XML.escape(cell.text + Self.mark(cell.verdict), attribute: false))</summary><pre>"
                for c in cell.cases {
                    var d = "\(c.record.id): \(c.record.outcome) — \(c.verdict.kind.rawValue): \(c.verdict.reason)"
                    if let e = c.verdict.expected { d += "\n  expected \(e)" }
                    if let by = c.verdict.decidedBy { d += " (\(by))" }
                    for (key, v) in c.record.properties.sorted(by: { $0.key < $1.key }) { d += "\n  \(key)=\(v)" }
                    for ch in c.record.checks { d += "\n  \(ch.passed ? "ok" : "FAILED") \(ch.name): \(ch.detail)" }
                    for l in c.record.kernelLog { d += "\n  kernel: \(l)" }
                    s += XML.escape(d, attribute: false) + "\n"
                }
                s += "</pre></details></td>"
            }
            s += "</tr>\n"
        }
        return s + "</table></body></html>\n"
    }
}
