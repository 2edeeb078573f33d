import Foundation

/// Text renderings of bench runs: the table, the tool-overhead section and a comparison.
public enum BenchText {
    /// 850ns, 12.3µs, 1.23ms, 1.234s; "-" for nothing.
    public static func duration(_ ns: UInt64?) -> String {
        guard let ns else { return "-" }
        let d = Double(ns)
        switch ns {
        case ..<1_000: return "\(ns)ns"
        case ..<1_000_000: return String(format: d < 10_000 ? "%.2fµs" : d < 100_000 ? "%.1fµs" : "%.0fµs", d / 1e3)
        case ..<1_000_000_000: return String(format: d < 10_000_000 ? "%.2fms" : d < 100_000_000 ? "%.1fms" : "%.0fms", d / 1e6)
        default: return String(format: "%.3fs", d / 1e9)
        }
    }

    /// Three significant digits.
    public static func gibps(_ v: Double?) -> String {
        guard let v, v.isFinite else { return "-" }
        if v >= 100 { return String(format: "%.0f", v) }
        if v >= 10 { return String(format: "%.1f", v) }
        if v >= 1 { return String(format: "%.2f", v) }
        return String(format: "%.3g", v)
    }

    public static func percent(_ change: Double?) -> String {
        guard let change, change.isFinite else { return "-" }
        return String(format: "%+.0f%%", change * 100)
    }

    /// Columns padded to their widest cell; the last column is not padded.
    static func columns(_ rows: [[String]], rightAligned: Set<Int> = []) -> String {
        guard let n = rows.map(\.count).max() else { return "" }
        var widths = [Int](repeating: 0, count: n)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        return rows.map { r in
            r.enumerated().map { i, c in
                if i == r.count - 1 && !rightAligned.contains(i) { return c }
                let pad = String(repeating: " ", count: widths[i] - c.count)
                return rightAligned.contains(i) ? pad + c : c + pad
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    static func notes(_ p: BenchPoint) -> String {
        var n: [String] = []
        if p.status != .ok { n.append("\(p.status.rawValue): \(p.reason ?? "")") }
        if let h = p.properties["anon_huge_kb"] { n.append("THP \(h) kB") }
        if let k = p.properties["kernel_page_size"] { n.append("page \(k)") }
        if let i = p.properties["iommu_page"] { n.append("IOMMU \(i)") }
        if let b = p.properties["bar"] { n.append(b) }
        return n.joined(separator: ", ")
    }

    public static func header(_ run: BenchRun) -> String {
        let s = run.settings
        var lines = ["bench: \(run.name) — device \(run.device), started \(run.started)"]
        var second = "\(s.repetitions) timed map+unmap pairs per point (stop early after \(s.minRepetitions) once \(String(format: "%g", s.budgetSeconds)) s are spent), \(s.warmup) warm-up, IOVA 0x\(String(s.iova, radix: 16))"
        if let sec = run.seconds { second += String(format: "; %.1f s in the guest", sec) }
        if let q = run.qemuSeconds { second += String(format: ", %.1f s QEMU start to power-off", q) }
        lines.append(second)
        for (what, m) in [("default matrix on this kernel", run.matrix), ("the same with edu data checks only", run.eduMatrix)] {
            guard let m else { continue }
            lines.append(String(format: "%@: %.1f s QEMU start to verdict (%d passed, %d failed, %d skipped, %d xfail)",
                                what, m.seconds, m.passed, m.failed, m.skipped, m.xfail))
            for e in m.engines ?? [] {
                lines.append(String(format: "  data checks by %@: %.1f MiB verified in %.2f s over %d cases, %.1f MiB/s",
                                    e.engine, Double(e.bytes) / 1048576, e.seconds, e.cases, e.bytesPerSecond / 1048576))
            }
        }
        for i in run.incidents { lines.append("incident: \(i)") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One row per point: n, map and unmap p50/p99/max, throughput at the median.
    public static func table(_ run: BenchRun) -> String {
        var rows = [["backend", "kind", "size", "n", "map p50", "p99", "max", "GiB/s", "unmap p50", "p99", "max", "GiB/s", "notes"]]
        for p in run.points {
            rows.append([p.backend, p.kind, formatSize(p.size), p.map.map { String($0.count) } ?? "-",
                         duration(p.map?.p50), duration(p.map?.p99), duration(p.map?.max), gibps(p.mapGiBps),
                         duration(p.unmap?.p50), duration(p.unmap?.p99), duration(p.unmap?.max), gibps(p.unmapGiBps), notes(p)])
        }
        return columns(rows, rightAligned: Set(2...11))
    }

    /// Swift vs C per call, and the verdict against the 5 % target.
    public static func overhead(_ run: BenchRun) -> String {
        guard let h = run.cHelper else { return "tool overhead: not measured (no --c-helper)\n" }
        var out = "tool overhead: this tool's map/unmap loop vs bench/map_bench.c on the same kernel, anon-private, median per call (ratio = Swift / C, target ≤ \(String(format: "%.2f", OverheadSummary.target)))\n"
        if let e = h.error { out += "C helper error: \(e)\n" }
        for p in h.points where p.status != .ok { out += "C helper \(p.backend) \(formatSize(p.size)): \(p.status.rawValue): \(p.reason ?? "")\n" }
        guard !run.overhead.isEmpty else { return out + "no size measured by both\n" }
        var rows = [["backend", "size", "map Swift", "map C", "ratio", "unmap Swift", "unmap C", "ratio", "THP kB Swift/C"]]
        for r in run.overhead {
            let thp = r.swiftHugeKB == r.cHugeKB ? (r.swiftHugeKB ?? "-") : "\(r.swiftHugeKB ?? "?")/\(r.cHugeKB ?? "?") (differ)"
            rows.append([r.backend, formatSize(r.size), duration(r.swiftMapP50), duration(r.cMapP50), String(format: "%.3f", r.mapRatio),
                         duration(r.swiftUnmapP50), duration(r.cUnmapP50), String(format: "%.3f", r.unmapRatio), thp])
        }
        out += columns(rows, rightAligned: Set(1...7))
        if let s = run.overheadSummary {
            out += String(format: "overhead: geometric mean %.3f over %d ratios (%+.1f %% per call), worst %.3f (%@); %d above %.2f — %@\n",
                          s.geometricMean, s.rows * 2, (s.geometricMean - 1) * 100, s.worst, s.worstAt, s.overTarget, OverheadSummary.target,
                          s.withinTarget ? "within the 5 % target" : "OVER the 5 % target")
        }
        return out
    }

    public static func report(_ run: BenchRun) -> String {
        header(run) + "\n" + table(run) + "\n" + overhead(run)
    }

    public static func comparison(_ c: BenchComparison) -> String {
        var out = "comparison: \(c.baseline) → \(c.current); medians, flagged when one moved more than ±\(String(format: "%g", c.threshold * 100)) %\n"
        var rows = [["backend", "kind", "size", "map before", "map now", "change", "unmap before", "unmap now", "change", "flag"]]
        for r in c.rows {
            rows.append([r.backend, r.kind, formatSize(r.size), duration(r.baselineMapP50), duration(r.currentMapP50), percent(r.mapChange),
                         duration(r.baselineUnmapP50), duration(r.currentUnmapP50), percent(r.unmapChange),
                         r.flag == .same ? "" : r.flag == .slower ? "SLOWER" : r.flag.rawValue])
        }
        out += columns(rows, rightAligned: Set(2...8))
        out += "per kind:\n"
        var krows: [[String]] = []
        for k in c.kinds {
            let flag = k.flag == .slower ? "SLOWER" : k.flag.rawValue
            var detail = "\(k.slowerRows) of \(k.rows) rows slower, \(k.fasterRows) faster"
            if let ch = k.largestChange, let at = k.largestAt { detail += "; largest \(percent(ch)) (\(at))" }
            krows.append(["  " + k.kind, flag, detail])
        }
        out += columns(krows)
        if let b = c.baselineMatrixSeconds, let n = c.currentMatrixSeconds {
            out += String(format: "default matrix, QEMU start to verdict: %.1f s → %.1f s (%@)\n", b, n, percent(BenchMath.change(from: UInt64(b * 1000), to: UInt64(n * 1000))))
        }
        let slower = c.slowerKinds
        out += slower.isEmpty ? "verdict: no kind got slower beyond the threshold\n"
                              : "verdict: slower beyond the threshold: \(slower.joined(separator: ", "))\n"
        return out
    }
}
