import Foundation

/// Hand-written SVG: throughput at the median call against region size, both axes log scale,
/// one panel for MAP_DMA and one for UNMAP_DMA, one polyline per series, a legend below.
public enum BenchPlot {
    public struct Series: Equatable {
        public var label: String
        public var color: String
        /// SVG stroke-dasharray; "" for solid.
        public var dash: String
        /// (size, map GiB/s, unmap GiB/s), any order.
        public var points: [(size: UInt64, map: Double?, unmap: Double?)]

        public static func == (a: Series, b: Series) -> Bool {
            a.label == b.label && a.color == b.color && a.dash == b.dash && a.points.count == b.points.count
                && zip(a.points, b.points).allSatisfy { $0.size == $1.size && $0.map == $1.map && $0.unmap == $1.unmap }
        }
    }

    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
    static let kindOrder = ["anon-private", "memfd", "hugetlb-2M", "hugetlb-1G", "thp", "bar"]
    static let dashes = ["", "7 4", "2 3", "10 3 2 3"]

    static func color(kind: String, among kinds: [String]) -> String {
        if let i = kindOrder.firstIndex(of: kind) { return palette[i] }
        let others = kinds.filter { !kindOrder.contains($0) }
        return palette[(kindOrder.count + (others.firstIndex(of: kind) ?? 0)) % palette.count]
    }

    /// One series per (backend, kind) of the run plus the C helper's; colour by kind, dash by backend.
    public static func series(_ run: BenchRun) -> [Series] {
        let ok = run.points.filter { $0.status == .ok }
        var kinds: [String] = []
        for p in run.points where !kinds.contains(p.kind) { kinds.append(p.kind) }
        var backends: [String] = []
        for p in run.points + (run.cHelper?.points ?? []) where !backends.contains(p.backend) { backends.append(p.backend) }
        func dash(_ b: String) -> String { dashes[(backends.firstIndex(of: b) ?? 0) % dashes.count] }
        var out: [Series] = []
        for b in backends {
            for k in kinds {
                let pts = ok.filter { $0.backend == b && $0.kind == k }
                guard !pts.isEmpty else { continue }
                out.append(Series(label: "\(k) · \(b)", color: color(kind: k, among: kinds), dash: dash(b),
                                  points: pts.map { ($0.size, $0.mapGiBps, $0.unmapGiBps) }))
            }
        }
        for b in backends {
            let pts = (run.cHelper?.points ?? []).filter { $0.status == .ok && $0.backend == b }
            guard !pts.isEmpty else { continue }
            out.append(Series(label: "anon-private · \(b) · C helper", color: "#000000", dash: dash(b),
                              points: pts.map { ($0.size, $0.mapGiBps, $0.unmapGiBps) }))
        }
        return out
    }

    /// Several runs of one backend (kernels compared): colour by kind, dash by run.
    public static func series(comparing runs: [BenchRun], backend: String) -> [Series] {
        var kinds: [String] = []
        for r in runs { for p in r.points where p.backend == backend && !kinds.contains(p.kind) { kinds.append(p.kind) } }
        var out: [Series] = []
        for (i, r) in runs.enumerated() {
            for k in kinds {
                let pts = r.points.filter { $0.status == .ok && $0.backend == backend && $0.kind == k }
                guard !pts.isEmpty else { continue }
                out.append(Series(label: "\(k) · \(r.label ?? r.kernelRelease)", color: color(kind: k, among: kinds),
                                  dash: dashes[i % dashes.count], points: pts.map { ($0.size, $0.mapGiBps, $0.unmapGiBps) }))
            }
        }
        return out
    }

    public static func svg(_ run: BenchRun) -> String {
        let s = run.settings
        return svg(series: series(run), title: "vfio-exerciser bench — \(run.name)",
                   subtitle: "GiB/s = size / median call time; \(s.repetitions) pairs per point (≥ \(s.minRepetitions)), \(s.warmup) warm-up; device \(run.device)")
    }

    static func esc(_ s: String) -> String { XML.escape(s, attribute: false) }

    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    static func yLabel(_ e: Int) -> String {
        let v = pow(10, Double(e))
        if e >= 0 { return String(format: "%.0f", v) }
        return String(format: "%.\(-e)f", v)
    }

    public static func svg(series: [Series], title: String, subtitle: String) -> String {
        let panelW = 470.0, panelH = 330.0
        let left = 70.0, top = 78.0, gap = 90.0
        let width = left + panelW * 2 + gap + 30
        let legendCols = 3
        let legendRows = (series.count + legendCols - 1) / legendCols
        let legendTop = top + panelH + 62
        let height = legendTop + Double(legendRows) * 20 + 20

        let sizes = series.flatMap { $0.points.map(\.size) }.filter { $0 > 0 }
        let values = series.flatMap { $0.points.flatMap { [$0.map, $0.unmap].compactMap { $0 } } }.filter { $0 > 0 && $0.isFinite }
        // x: log2 of bytes, padded by one octave; y: whole decades around the data.
        let xmin = log2(Double(sizes.min() ?? 4096)) - 1
        let xmax = log2(Double(sizes.max() ?? (1 << 30))) + 1
        let ylo = Int(floor(log10(values.min() ?? 0.01)))
        let yhi = max(Int(ceil(log10(values.max() ?? 10))), ylo + 1)

        var o = """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
        <rect x="0" y="0" width="\(Int(width))" height="\(Int(height))" fill="#ffffff"/>
        <text x="\(f(width / 2))" y="24" text-anchor="middle" font-size="16" font-weight="bold">\(esc(title))</text>
        <text x="\(f(width / 2))" y="44" text-anchor="middle" fill="#444444">\(esc(subtitle))</text>

        """
        for (pi, panel) in ["VFIO_IOMMU_MAP_DMA", "VFIO_IOMMU_UNMAP_DMA"].enumerated() {
            let x0 = left + Double(pi) * (panelW + gap)
            func px(_ size: UInt64) -> Double { x0 + (log2(Double(size)) - xmin) / (xmax - xmin) * panelW }
            func py(_ v: Double) -> Double { top + panelH - (log10(v) - Double(ylo)) / Double(yhi - ylo) * panelH }
            o += "<g class=\"panel\">\n"
            o += "<text x=\"\(f(x0 + panelW / 2))\" y=\"\(f(top - 10))\" text-anchor=\"middle\" font-weight=\"bold\">\(panel)</text>\n"
            o += "<rect x=\"\(f(x0))\" y=\"\(f(top))\" width=\"\(f(panelW))\" height=\"\(f(panelH))\" fill=\"none\" stroke=\"#000000\"/>\n"
            // x ticks: powers of 4 from 4K.
            var e = 12
            while Double(e) <= xmax {
                if Double(e) >= xmin {
                    let x = px(UInt64(1) << UInt64(e))
                    o += "<line x1=\"\(f(x))\" y1=\"\(f(top))\" x2=\"\(f(x))\" y2=\"\(f(top + panelH))\" stroke=\"#dddddd\"/>\n"
                    o += "<text x=\"\(f(x))\" y=\"\(f(top + panelH + 16))\" text-anchor=\"middle\">\(formatSize(UInt64(1) << UInt64(e)))</text>\n"
                }
                e += 2
            }
            for d in ylo...yhi {
                let y = py(pow(10, Double(d)))
                o += "<line x1=\"\(f(x0))\" y1=\"\(f(y))\" x2=\"\(f(x0 + panelW))\" y2=\"\(f(y))\" stroke=\"#dddddd\"/>\n"
                o += "<text x=\"\(f(x0 - 6))\" y=\"\(f(y + 4))\" text-anchor=\"end\">\(yLabel(d))</text>\n"
            }
            o += "<text x=\"\(f(x0 + panelW / 2))\" y=\"\(f(top + panelH + 36))\" text-anchor=\"middle\">region size (log scale)</text>\n"
            let yl = top + panelH / 2
            o += "<text x=\"\(f(x0 - 48))\" y=\"\(f(yl))\" text-anchor=\"middle\" transform=\"rotate(-90 \(f(x0 - 48)) \(f(yl)))\">GiB/s at the median call (log scale)</text>\n"
            if series.isEmpty {
                o += "<text x=\"\(f(x0 + panelW / 2))\" y=\"\(f(yl))\" text-anchor=\"middle\" fill=\"#888888\">no measured points</text>\n"
            }
            for s in series {
                let pts = s.points.compactMap { p -> (Double, Double)? in
                    guard let v = pi == 0 ? p.map : p.unmap, v > 0, v.isFinite, p.size > 0 else { return nil }
                    return (px(p.size), py(v))
                }.sorted { $0.0 < $1.0 }
                guard !pts.isEmpty else { continue }
                let dash = s.dash.isEmpty ? "" : " stroke-dasharray=\"\(s.dash)\""
                o += "<g class=\"series\"><title>\(esc(s.label))</title>\n"
                if pts.count > 1 {
                    o += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\"\(dash) points=\"" + pts.map { "\(f($0.0)),\(f($0.1))" }.joined(separator: " ") + "\"/>\n"
                }
                for (x, y) in pts { o += "<circle cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"3\" fill=\"\(s.color)\"/>\n" }
                o += "</g>\n"
            }
            o += "</g>\n"
        }
        o += "<g class=\"legend\">\n"
        let colW = (width - 2 * left) / Double(legendCols)
        for (i, s) in series.enumerated() {
            let x = left + Double(i % legendCols) * colW
            let y = legendTop + Double(i / legendCols) * 20
            let dash = s.dash.isEmpty ? "" : " stroke-dasharray=\"\(s.dash)\""
            o += "<line x1=\"\(f(x))\" y1=\"\(f(y))\" x2=\"\(f(x + 34))\" y2=\"\(f(y))\" stroke=\"\(s.color)\" stroke-width=\"2\"\(dash)/>"
            o += "<circle cx=\"\(f(x + 17))\" cy=\"\(f(y))\" r=\"3\" fill=\"\(s.color)\"/>"
            o += "<text x=\"\(f(x + 42))\" y=\"\(f(y + 4))\">\(esc(s.label))</text>\n"
        }
        o += "</g>\n</svg>\n"
        return o
    }
}
