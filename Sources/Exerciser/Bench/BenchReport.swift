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
        var second = (run.boots.map { "\($0) boots of the kernel, " } ?? "")
            + (s.passes.map { "\($0) passes over the whole sweep\(run.boots == nil ? "" : " per boot"), each point once per pass; per pass " } ?? "")
            + "\(s.repetitions) timed map+unmap pairs per point (stop early after \(s.minRepetitions) once \(String(format: "%g", s.budgetSeconds)) s are spent), \(s.warmup) warm-up, IOVA 0x\(String(s.iova, radix: 16))"
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
        if let ys = run.yardsticks, !ys.isEmpty {
            func range(_ xs: [UInt64]) -> String { String(format: "%.1f–%.1f ms", Double(xs.min()!) / 1e6, Double(xs.max()!) / 1e6) }
            lines.append("host yardstick (\(ys.count) samples\(run.boots.map { " over \($0) boots" } ?? "")): writing \(Yardstick.writeBytes >> 20) MiB of resident pages \(Yardstick.writePasses)× "
                         + range(ys.map(\.writeNanos)) + ", CPU loop " + range(ys.map(\.cpuNanos)))
        }
        for i in run.incidents { lines.append("incident: \(i)") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// µs with two decimals below 10, one below 1000; "-" for nothing.
    public static func micros(_ v: Double?) -> String {
        guard let v, v.isFinite else { return "-" }
        return String(format: abs(v) < 10 ? "%.2f" : abs(v) < 1000 ? "%.1f" : "%.0f", v)
    }

    static func interval(_ i: Interval?, _ fmt: String = "%.3f") -> String {
        guard let i else { return "-" }
        return String(format: "\(fmt) [\(fmt), \(fmt)]", i.estimate, i.low, i.high)
    }

    static func floor(_ f: Double?) -> String { f.map { String(format: "%.0f%%", $0 * 100) } ?? "-" }

    /// One row per point: n, map and unmap p50/p99/max, throughput at the median, the spread of
    /// its passes, CPU µs per call split exactly into the tool's own side and the kernel's share.
    public static func table(_ run: BenchRun) -> String {
        var rows = [["backend", "kind", "size", "n", "map p50", "p99", "max", "GiB/s", "unmap p50", "p99", "max", "GiB/s", "passes", "noise m/u",
                     "CPU µs", "user", "sys", "notes"]]
        for p in run.points where !p.kind.hasPrefix("guest-") {
            rows.append([p.backend, p.kind, formatSize(p.size), p.map.map { String($0.count) } ?? "-",
                         duration(p.map?.p50), duration(p.map?.p99), duration(p.map?.max), gibps(p.mapGiBps),
                         duration(p.unmap?.p50), duration(p.unmap?.p99), duration(p.unmap?.max), gibps(p.unmapGiBps),
                         p.passes.map { String($0.count) } ?? "-", "\(floor(p.mapFloor))/\(floor(p.unmapFloor))",
                         micros(p.cpuPerCall), micros(p.toolPerCall), micros(p.kernelPerCall), notes(p)])
        }
        return columns(rows, rightAligned: Set(2...16)) + cpuLegend(run) + "noise m/u: the largest change between two passes' medians of the row, map / unmap (what --baseline builds its limit on)\n"
    }

    /// What the CPU columns are, with the empty bracket's measured cost.
    static func cpuLegend(_ run: BenchRun) -> String {
        let br = (run.points.compactMap(\.brackets) + (run.rounds ?? []).compactMap(\.brackets))
        let inside = br.map(\.emptyInside), whole = br.map(\.emptyWhole)
        var out = "CPU µs per call (map or unmap), exact: the thread's CPU time over the timed pairs (CLOCK_THREAD_CPUTIME_ID); "
            + "sys: the kernel's share, CPU time inside thread-clock reads around each ioctl less an empty bracket's; "
            + "user: the rest less the brackets' own cost: the tool's side\n"
        if let a = inside.min(), let b = inside.max(), let c = whole.min(), let d = whole.max() {
            out += String(format: "empty bracket (median of 256, calibrated before each point's timed pairs): %.0f–%.0f ns inside (subtracted from each call's sys), %.0f–%.0f ns in all (subtracted from user)\n",
                          a, b, c, d)
        }
        return out
    }

    /// Swift vs C, alternating: ratio intervals, the CPU split and the verdict against the target.
    public static func overhead(_ run: BenchRun) -> String {
        let s = run.settings
        guard let h = run.cHelper else { return "tool overhead: not measured (no --c-helper)\n" }
        var out = "tool overhead: this tool's map/unmap loop vs bench/map_bench.c, anon-private, taking turns: \(s.rounds ?? 0) rounds, "
            + "each a Swift and a C block per point in an order drawn from seed \(s.seed ?? 0); every block opens its container, builds a "
            + "2M-aligned region touched once per page, \(s.warmup) warm-up then \(s.roundPairs ?? 0) timed pairs.\n"
            + "ratio = Swift / C of the block medians, paired per round: geometric mean [95 % bootstrap interval over rounds]\n"
        if let e = h.error { out += "C helper error: \(e)\n" }
        guard let rows = run.comparison, !rows.isEmpty else { return out + "no point measured by both\n" }
        var t = [["backend", "size", "rounds", "map ratio", "", "unmap ratio", "", "CPU µs/call S/C", "user S/C", "sys S/C", "Swift−C user µs/call", "Swift−C sys", "notes"]]
        for r in rows {
            t.append([r.backend, formatSize(r.size), String(r.rounds), interval(r.map), r.mapVerdict?.rawValue ?? "-",
                      interval(r.unmap), r.unmapVerdict?.rawValue ?? "-",
                      "\(micros(r.swiftCPU))/\(micros(r.cCPU))", "\(micros(r.swiftUser))/\(micros(r.cUser))", "\(micros(r.swiftSystem))/\(micros(r.cSystem))",
                      interval(r.userOverhead, "%+.2f"), interval(r.systemOverhead, "%+.2f"),
                      r.thpDiffer > 0 ? "THP differs in \(r.thpDiffer) rounds" : ""])
        }
        out += columns(t, rightAligned: [1, 2, 3, 5, 7, 8, 9, 10, 11])
        out += "per call, exact, both sides alike: sys = CPU inside thread-clock brackets around each ioctl less an empty bracket's (the kernel's share); user = the thread's CPU less sys and the brackets' cost (the loop's own side)\n"
        if let sum = run.overheadSummary {
            out += "\(sum.intervals) ratio intervals: \(sum.notDistinguishable) not distinguishable from 1; against ≤ \(String(format: "%.2f", OverheadSummary.target)): "
                + "\(sum.within) within, \(sum.over) over, \(sum.undecided) straddle it (noise too large to judge); widest interval ×\(String(format: "%.2f", sum.widest)) (\(sum.widestAt))\n"
            if let u = sum.userOverhead {
                out += "user time the tool adds per call (Swift − C, exact, all rounds): mean \(interval(u, "%+.2f")) µs"
                    + (sum.userOverheadMedian.map { ", median \(interval($0, "%+.2f")) µs (robust to the rounds with an outlier)" } ?? "") + "\n"
            }
            if let u = sum.systemOverhead {
                out += "system time, Swift − C per call (the same ioctl; should hold 0): \(interval(u, "%+.2f")) µs\n"
            }
            if let u = sum.cpuOverhead {
                out += "all CPU, Swift − C per call: \(interval(u, "%+.2f")) µs\n"
            }
            if let a = sum.emptyInside, let w = sum.emptyWhole {
                out += String(format: "empty bracket (median of 256, calibrated per block): %.0f–%.0f ns inside, %.0f–%.0f ns in all\n", a.lowerBound, a.upperBound, w.lowerBound, w.upperBound)
            }
            if let b = sum.bracketSystemShare, let r = sum.rusageSystemShare {
                out += String(format: "cross-check, all blocks pooled: system share of the CPU %.1f %% by the brackets, %.1f %% by getrusage (tick-sampled)\n", b * 100, r * 100)
            }
            out += "overhead: \(sum.verdict.rawValue)\n"
        }
        return out
    }

    public static func noise(_ run: BenchRun) -> String {
        guard let n = run.noise else { return "noise floor: not measured (no comparison rounds)\n" }
        var out = String(format: "comparison blocks' noise: two repeats of one point, nothing changed, move its median by up to %.1f %% (%.0fth percentile of %d repeat pairs; each repeat is a Swift block of the comparison)\n",
                         n.floor * 100, n.quantile * 100, n.pairs)
        out += "  per size (95th percentile / largest; --baseline judges each row by its own passes, these only rows of a run without them): "
            + n.perSize.map { String(format: "%@ %.0f / %.0f %%", formatSize($0.size), $0.floor * 100, ($0.largest ?? $0.floor) * 100) }.joined(separator: ", ") + "\n"
        return out
    }

    /// Guest-sized maps: whole-guest map and unmap time per backing and size, and its growth per GiB.
    public static func guest(_ run: BenchRun) -> String {
        let pts = run.points.filter { $0.kind.hasPrefix("guest-") }
        guard !pts.isEmpty else { return "" }
        let s = run.settings
        var out = "guest-sized maps: guest RAM laid out as q35 does (max-ram-below-4g \(formatSize(s.guestBelow4G ?? 0))), one MAP_DMA per RAM slot at IOVA = guest physical, \(s.guestBackend ?? "-"); time for the whole guest\n"
        var rows = [["backing", "guest RAM", "slots", "n", "map p50", "per GiB", "unmap p50", "per GiB", "CPU µs", "user", "sys", "passes", "noise m/u", "notes"]]
        for p in pts {
            let gib = Double(p.size) / Double(1 << 30)
            rows.append([p.kind.replacingOccurrences(of: "guest-", with: ""), formatSize(p.size),
                         p.properties["slots"].map { String($0.split(separator: " ").count) } ?? "-", p.map.map { String($0.count) } ?? "-",
                         duration(p.map?.p50), duration(p.map.map { UInt64(Double($0.p50) / gib) }),
                         duration(p.unmap?.p50), duration(p.unmap.map { UInt64(Double($0.p50) / gib) }),
                         micros(p.cpuMicros.map { $0 / Double(max(p.mapNanos.count, 1)) }),
                         micros(p.cpuMicros.flatMap { p.brackets?.toolNanos(threadCPUNanos: $0 * 1e3) }.map { $0 / 1e3 / Double(max(p.mapNanos.count, 1)) }),
                         micros(p.brackets.map { $0.kernelNanos / 1e3 / Double(max(p.mapNanos.count, 1)) }),
                         p.passes.map { String($0.count) } ?? "-", "\(floor(p.mapFloor))/\(floor(p.unmapFloor))",
                         p.status == .ok ? (p.properties["slots"] ?? "") : "\(p.status.rawValue): \(p.reason ?? "")"])
        }
        out += columns(rows, rightAligned: Set(1...12))
        out += "CPU / user / sys µs: per whole-guest map+unmap, split as in the table above\n"
        for k in BenchOptions.guestKinds {
            let ok = pts.filter { $0.kind == k && $0.status == .ok }
            let xs = ok.map { Double($0.size) / Double(1 << 30) }
            if let m = BenchMath.linearFit(xs, ok.map { Double($0.map!.p50) / 1e6 }), let u = BenchMath.linearFit(xs, ok.map { Double($0.unmap!.p50) / 1e6 }) {
                out += String(format: "  %@: map grows %.1f ms per GiB (fit over %d sizes, %.2f ms at 0), unmap %.1f ms per GiB\n",
                              k.replacingOccurrences(of: "guest-", with: ""), m.slope, ok.count, m.intercept, u.slope)
            } else if let p = ok.first {
                out += String(format: "  %@: one size only (%@): no growth fitted\n", k.replacingOccurrences(of: "guest-", with: ""), formatSize(p.size))
            }
        }
        return out
    }

    public static func report(_ run: BenchRun) -> String {
        header(run) + "\n" + table(run) + "\n" + overhead(run) + "\n" + noise(run) + (guest(run).isEmpty ? "" : "\n" + guest(run))
    }

    public static func comparison(_ c: BenchComparison) -> String {
        var out = "comparison: \(c.baseline) → \(c.current); a row is flagged only when it moved beyond \(c.thresholdSource)\n"
        if let t = c.tools { out += "measured by different builds: \(t[0]) → \(t[1])\n" }
        if let d = c.hostDrift {
            let verdict = !d.sameKernel ? ": different kernels, so it is not allowed for (a kernel can slow user space too)"
                : d.moved ? ": beyond it, so the limits allow for it on that side" : ": within it, the limits are the rows' own"
            out += String(format: "host: the yardstick moved memory writes ×%.2f, CPU ×%.2f (current / baseline; each run's own spread %.0f %% and %.0f %%)%@\n",
                          d.write, d.cpu, d.writeFloor * 100, d.cpuFloor * 100, verdict)
        }
        var rows = [["backend", "kind", "size", "map before", "map now", "change", "noise", "limit", "unmap before", "unmap now", "change", "noise", "limit", "flag"]]
        func lim(_ l: Double?) -> String { l.map { String(format: "±%.0f%%", $0 * 100) } ?? "-" }
        for r in c.rows {
            rows.append([r.backend, r.kind, formatSize(r.size), duration(r.baselineMapP50), duration(r.currentMapP50), percent(r.mapChange),
                         floor(r.mapFloor), lim(r.mapLimit ?? r.threshold),
                         duration(r.baselineUnmapP50), duration(r.currentUnmapP50), percent(r.unmapChange), floor(r.unmapFloor), lim(r.unmapLimit ?? r.threshold),
                         r.flag == .same ? "" : r.flag == .slower ? "SLOWER" : r.flag.rawValue])
        }
        out += columns(rows, rightAligned: Set(2...12))
        out += "before / now: the geometric mean of the row's pass medians; noise: the larger of the two runs' largest change between two passes; limit: what the change had to exceed\n"
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
        out += slower.isEmpty ? "verdict: no kind got slower beyond the noise\n"
                              : "verdict: slower beyond the noise: \(slower.joined(separator: ", "))\n"
        return out
    }
}
