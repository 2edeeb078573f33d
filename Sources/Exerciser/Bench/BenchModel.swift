import Foundation

// The bench's data: latency samples per (backend, kind, size), their statistics, the C helper's
// samples, the tool-overhead ratios and the comparison with a baseline run. Everything here is
// pure (no kernel), so the unit tests cover it; BenchRunner fills it inside the guest.

/// Percentiles and throughput, as the bench computes them for Swift and C samples alike.
public enum BenchMath {
    /// Nearest-rank percentile of ascending `sorted` samples: the smallest sample with at least
    /// `p` % of the samples at or below it. Always an observed value (p99 of fewer than 100
    /// samples is the maximum); nil for no samples.
    public static func percentile(_ sorted: [UInt64], _ p: Double) -> UInt64? {
        guard !sorted.isEmpty else { return nil }
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }

    /// Bytes per second in GiB/s (2^30 bytes) for one call that took `nanos`; nil for 0 ns.
    public static func gibPerSecond(bytes: UInt64, nanos: UInt64) -> Double? {
        guard nanos > 0 else { return nil }
        return Double(bytes) / (Double(nanos) / 1e9) / Double(1 << 30)
    }

    /// `a / b`; nil when b is 0.
    public static func ratio(_ a: UInt64, _ b: UInt64) -> Double? {
        b == 0 ? nil : Double(a) / Double(b)
    }

    /// Relative change from `base` to `current` (0.25 = 25 % more); nil when base is 0.
    public static func change(from base: UInt64, to current: UInt64) -> Double? {
        base == 0 ? nil : Double(current) / Double(base) - 1
    }

    public static func geometricMean(_ xs: [Double]) -> Double? {
        let pos = xs.filter { $0 > 0 }
        guard !pos.isEmpty, pos.count == xs.count else { return nil }
        return exp(pos.map { log($0) }.reduce(0, +) / Double(pos.count))
    }
}

/// Order statistics of one call's latency samples, in nanoseconds.
public struct LatencyStats: Codable, Equatable, Sendable {
    public var count: Int
    public var min: UInt64
    public var p50: UInt64
    public var p99: UInt64
    public var max: UInt64
    public var mean: Double

    public init?(samples: [UInt64]) {
        guard !samples.isEmpty else { return nil }
        let s = samples.sorted()
        count = s.count
        min = s[0]
        p50 = BenchMath.percentile(s, 50)!
        p99 = BenchMath.percentile(s, 99)!
        max = s[s.count - 1]
        mean = Double(s.reduce(0.0) { $0 + Double($1) }) / Double(s.count)
    }
}

/// One measured (backend, kind, size): raw samples, their statistics and throughput at the median.
public struct BenchPoint: Codable, Equatable, Sendable {
    public enum Status: String, Codable, Sendable {
        case ok
        /// The region could not be built here (no hugepages, no BAR): not a failure.
        case skip
        /// The kernel refused a map or unmap, or the region vanished: the run is not clean.
        case error
    }

    public var backend: String
    public var kind: String
    /// Who ran the loop: "swift" (this tool) or "c" (bench/map_bench.c).
    public var source: String
    public var size: UInt64
    public var status: Status
    public var reason: String?
    public var warmup: Int
    public var mapNanos: [UInt64]
    public var unmapNanos: [UInt64]
    public var map: LatencyStats?
    public var unmap: LatencyStats?
    /// size / median map time.
    public var mapGiBps: Double?
    /// size / median unmap time.
    public var unmapGiBps: Double?
    /// Facts about the region: IOMMU page size, huge pages obtained, offset modulo 2 MiB.
    public var properties: [String: String]
    /// Wall time of the point: building the region, warm-up, samples, release.
    public var seconds: Double?

    public init(backend: String, kind: String, source: String = "swift", size: UInt64, status: Status = .ok, reason: String? = nil,
                warmup: Int = 0, mapNanos: [UInt64] = [], unmapNanos: [UInt64] = [], properties: [String: String] = [:],
                seconds: Double? = nil) {
        self.backend = backend
        self.kind = kind
        self.source = source
        self.size = size
        self.status = status
        self.reason = reason
        self.warmup = warmup
        self.mapNanos = mapNanos
        self.unmapNanos = unmapNanos
        self.properties = properties
        self.seconds = seconds
        map = LatencyStats(samples: mapNanos)
        unmap = LatencyStats(samples: unmapNanos)
        mapGiBps = map.flatMap { BenchMath.gibPerSecond(bytes: size, nanos: $0.p50) }
        unmapGiBps = unmap.flatMap { BenchMath.gibPerSecond(bytes: size, nanos: $0.p50) }
    }

    public struct Key: Hashable, Comparable, Sendable {
        public var backend: String
        public var kind: String
        public var size: UInt64
        public static func < (a: Key, b: Key) -> Bool {
            (a.backend, a.kind, a.size) < (b.backend, b.kind, b.size)
        }
    }

    public var key: Key { Key(backend: backend, kind: kind, size: size) }
}

/// What the run was asked to do.
public struct BenchSettings: Codable, Equatable, Sendable {
    public var backends: [String]
    public var kinds: [String]
    public var sizes: [UInt64]
    public var repetitions: Int
    public var warmup: Int
    public var minRepetitions: Int
    /// Seconds of sampling per point after which the loop stops once it has minRepetitions.
    public var budgetSeconds: Double
    /// The one IOVA every point maps at (both loops).
    public var iova: UInt64

    public init(backends: [String], kinds: [String], sizes: [UInt64], repetitions: Int, warmup: Int, minRepetitions: Int,
                budgetSeconds: Double, iova: UInt64) {
        self.backends = backends
        self.kinds = kinds
        self.sizes = sizes
        self.repetitions = repetitions
        self.warmup = warmup
        self.minRepetitions = minRepetitions
        self.budgetSeconds = budgetSeconds
        self.iova = iova
    }
}

/// The C helper's run: its points (kind anon-private, source "c"), or why there are none.
public struct CHelperResult: Codable, Equatable, Sendable {
    /// Each invocation (one per backend), as a command line.
    public var commands: [String]
    public var points: [BenchPoint]
    public var error: String?
    public init(commands: [String], points: [BenchPoint], error: String? = nil) {
        self.commands = commands
        self.points = points
        self.error = error
    }
}

/// Swift median / C median for one (backend, size) of anon-private: the tool's own cost per call.
public struct OverheadRow: Codable, Equatable, Sendable {
    public var backend: String
    public var size: UInt64
    public var swiftMapP50: UInt64
    public var cMapP50: UInt64
    public var mapRatio: Double
    public var swiftUnmapP50: UInt64
    public var cUnmapP50: UInt64
    public var unmapRatio: Double
    /// AnonHugePages of each side's region: the ratio means little when they differ.
    public var swiftHugeKB: String?
    public var cHugeKB: String?

    public static func rows(swift: [BenchPoint], c: [BenchPoint]) -> [OverheadRow] {
        var out: [OverheadRow] = []
        let mine = Dictionary(swift.filter { $0.status == .ok }.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        for cp in c where cp.status == .ok {
            guard let sp = mine[cp.key], let sm = sp.map, let su = sp.unmap, let cm = cp.map, let cu = cp.unmap,
                  let mr = BenchMath.ratio(sm.p50, cm.p50), let ur = BenchMath.ratio(su.p50, cu.p50) else { continue }
            out.append(OverheadRow(backend: cp.backend, size: cp.size, swiftMapP50: sm.p50, cMapP50: cm.p50, mapRatio: mr,
                                   swiftUnmapP50: su.p50, cUnmapP50: cu.p50, unmapRatio: ur,
                                   swiftHugeKB: sp.properties["anon_huge_kb"], cHugeKB: cp.properties["anon_huge_kb"]))
        }
        return out.sorted { ($0.backend, $0.size) < ($1.backend, $1.size) }
    }
}

/// The overhead rows condensed: the target is ≤ 5 % per call (ratio ≤ 1.05).
public struct OverheadSummary: Codable, Equatable, Sendable {
    public static let target = 1.05
    public var rows: Int
    /// Geometric mean over every map and unmap ratio.
    public var geometricMean: Double
    public var worst: Double
    public var worstAt: String
    /// Map or unmap ratios above the target.
    public var overTarget: Int
    /// The typical call (geometric mean) within 5 %.
    public var withinTarget: Bool

    public init?(_ rows: [OverheadRow]) {
        guard !rows.isEmpty else { return nil }
        let all = rows.flatMap { [$0.mapRatio, $0.unmapRatio] }
        self.rows = rows.count
        geometricMean = BenchMath.geometricMean(all) ?? 0
        var w = (ratio: -Double.infinity, at: "")
        for r in rows {
            if r.mapRatio > w.ratio { w = (r.mapRatio, "\(r.backend) \(formatSize(r.size)) map") }
            if r.unmapRatio > w.ratio { w = (r.unmapRatio, "\(r.backend) \(formatSize(r.size)) unmap") }
        }
        worst = w.ratio
        worstAt = w.at
        overTarget = all.filter { $0 > Self.target }.count
        withinTarget = geometricMean <= Self.target
    }
}

/// The default matrix's QEMU-start-to-verdict time on the same kernel (bench --vm).
public struct MatrixTiming: Codable, Equatable, Sendable {
    public var seconds: Double
    public var passed: Int
    public var failed: Int
    public var skipped: Int
    public var xfail: Int
    /// What the data checks verified, per engine.
    public var engines: [EngineThroughput]?
    public init(seconds: Double, passed: Int, failed: Int, skipped: Int, xfail: Int, engines: [EngineThroughput]? = nil) {
        self.seconds = seconds
        self.passed = passed
        self.failed = failed
        self.skipped = skipped
        self.xfail = xfail
        self.engines = engines
    }

    public init(_ seconds: Double, _ r: RunReport) {
        self.init(seconds: seconds, passed: r.count(.pass), failed: r.count(.fail), skipped: r.count(.skip), xfail: r.count(.xfail),
                  engines: EngineThroughput.from(r))
    }
}

/// Bytes of mappings one data-check engine verified in a run, and the time its checks took.
public struct EngineThroughput: Codable, Equatable, Sendable {
    public var engine: String
    public var cases: Int
    public var bytes: UInt64
    public var seconds: Double
    public var bytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds : 0 }

    public init(engine: String, cases: Int, bytes: UInt64, seconds: Double) {
        self.engine = engine
        self.cases = cases
        self.bytes = bytes
        self.seconds = seconds
    }

    public static func from(_ r: RunReport) -> [EngineThroughput] {
        var out: [String: EngineThroughput] = [:]
        for c in r.results {
            guard let e = c.record.dataEngine, let n = c.record.dataNanos else { continue }
            var t = out[e] ?? EngineThroughput(engine: e, cases: 0, bytes: 0, seconds: 0)
            t.cases += 1
            t.bytes += c.record.dataBytes ?? 0
            t.seconds += Double(n) / 1e9
            out[e] = t
        }
        return out.values.sorted { $0.engine < $1.engine }
    }
}

/// A whole bench run: what `--output` writes and `--baseline` reads.
public struct BenchRun: Codable, Equatable, Sendable {
    /// "vfio-exerciser-bench/<major>": readers refuse another major version.
    public static let schemaID = "vfio-exerciser-bench/1"

    public var schema: String
    public var tool: String
    public var kernelRelease: String
    /// How the kernel was named on the host ("debian:6.1") when run through the VM.
    public var label: String?
    public var device: String
    public var started: String
    public var settings: BenchSettings
    public var points: [BenchPoint]
    public var cHelper: CHelperResult?
    public var overhead: [OverheadRow]
    public var overheadSummary: OverheadSummary?
    public var matrix: MatrixTiming?
    /// The same matrix with the edus as the only data-check engines (no NVMe): the comparison.
    public var eduMatrix: MatrixTiming?
    /// Guest problems seen by the harness (panics, splats, a killed guest).
    public var incidents: [String]
    /// Guest-side wall time of the bench; QEMU start to power-off when run through the VM.
    public var seconds: Double?
    public var qemuSeconds: Double?

    public init(tool: String = toolVersion, kernelRelease: String, label: String? = nil, device: String, started: String,
                settings: BenchSettings, points: [BenchPoint] = [], cHelper: CHelperResult? = nil) {
        schema = Self.schemaID
        self.tool = tool
        self.kernelRelease = kernelRelease
        self.label = label
        self.device = device
        self.started = started
        self.settings = settings
        self.points = points
        self.cHelper = cHelper
        overhead = []
        incidents = []
        recompute()
    }

    /// Derived fields from the samples: called whenever points or the C helper's result change.
    public mutating func recompute() {
        overhead = OverheadRow.rows(swift: points, c: cHelper?.points ?? [])
        overheadSummary = OverheadSummary(overhead)
    }

    public var name: String { label.map { "\($0) (\(kernelRelease))" } ?? kernelRelease }

    public func encoded() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try enc.encode(self)
    }

    /// Reads a saved run, refusing another schema major version.
    public static func decode(_ data: Data, from path: String = "baseline") throws -> BenchRun {
        struct Probe: Decodable { var schema: String? }
        guard let probe = try? JSONDecoder().decode(Probe.self, from: data) else {
            throw UsageError("\(path): not a JSON object")
        }
        guard let s = probe.schema, s.hasPrefix("vfio-exerciser-bench/") else {
            throw UsageError("\(path): not a vfio-exerciser bench file (no \"schema\": \"\(schemaID)\")")
        }
        guard s == schemaID else { throw UsageError("\(path): schema \(s), this tool reads \(schemaID)") }
        do { return try JSONDecoder().decode(BenchRun.self, from: data) } catch {
            throw UsageError("\(path): \(error)")
        }
    }

    public static func load(_ path: String) throws -> BenchRun {
        guard let data = FileManager.default.contents(atPath: path) else { throw UsageError("cannot read \(path)") }
        return try decode(data, from: path)
    }
}

/// A run against a baseline: per (backend, kind, size) how the medians moved, flagged past a threshold.
public struct BenchComparison: Codable, Equatable, Sendable {
    public enum Flag: String, Codable, Sendable {
        case slower, faster, same
        /// Measured on one side only (kind skipped, size not run): no verdict.
        case unmatched
    }

    public struct Row: Codable, Equatable, Sendable {
        public var backend: String
        public var kind: String
        public var size: UInt64
        public var baselineMapP50: UInt64?
        public var currentMapP50: UInt64?
        /// current/baseline − 1 of the median map time: +0.3 is 30 % slower.
        public var mapChange: Double?
        public var baselineUnmapP50: UInt64?
        public var currentUnmapP50: UInt64?
        public var unmapChange: Double?
        public var flag: Flag
    }

    /// A kind is slower when any of its rows is, else faster when any is, else the same.
    public struct KindVerdict: Codable, Equatable, Sendable {
        public var kind: String
        public var flag: Flag
        public var rows: Int
        public var slowerRows: Int
        public var fasterRows: Int
        /// The row whose median moved most (signed change, where).
        public var largestChange: Double?
        public var largestAt: String?
    }

    public var baseline: String
    public var current: String
    public var threshold: Double
    public var rows: [Row]
    public var kinds: [KindVerdict]
    public var baselineMatrixSeconds: Double?
    public var currentMatrixSeconds: Double?

    public var slowerKinds: [String] { kinds.filter { $0.flag == .slower }.map(\.kind) }

    /// `threshold` as a fraction (0.2 = 20 %); a median must move strictly more than that.
    public static func compare(baseline: BenchRun, current: BenchRun, threshold: Double) -> BenchComparison {
        let base = Dictionary(baseline.points.filter { $0.status == .ok }.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let cur = Dictionary(current.points.filter { $0.status == .ok }.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        var rows: [Row] = []
        for key in Set(base.keys).union(cur.keys).sorted() {
            let b = base[key], c = cur[key]
            var row = Row(backend: key.backend, kind: key.kind, size: key.size, baselineMapP50: b?.map?.p50, currentMapP50: c?.map?.p50,
                          baselineUnmapP50: b?.unmap?.p50, currentUnmapP50: c?.unmap?.p50, flag: .unmatched)
            if let bm = row.baselineMapP50, let cm = row.currentMapP50 { row.mapChange = BenchMath.change(from: bm, to: cm) }
            if let bu = row.baselineUnmapP50, let cu = row.currentUnmapP50 { row.unmapChange = BenchMath.change(from: bu, to: cu) }
            let changes = [row.mapChange, row.unmapChange].compactMap { $0 }
            if !changes.isEmpty {
                row.flag = changes.contains { $0 > threshold } ? .slower : changes.contains { $0 < -threshold } ? .faster : .same
            }
            rows.append(row)
        }
        var kinds: [KindVerdict] = []
        var order: [String] = []
        for r in rows where !order.contains(r.kind) { order.append(r.kind) }
        for k in order {
            let rs = rows.filter { $0.kind == k && $0.flag != .unmatched }
            let slower = rs.filter { $0.flag == .slower }.count
            let faster = rs.filter { $0.flag == .faster }.count
            var largest: (Double, String)?
            for r in rs {
                for (what, ch) in [("map", r.mapChange), ("unmap", r.unmapChange)] {
                    guard let ch else { continue }
                    if largest == nil || abs(ch) > abs(largest!.0) { largest = (ch, "\(r.backend) \(formatSize(r.size)) \(what)") }
                }
            }
            let flag: Flag = rs.isEmpty ? .unmatched : slower > 0 ? .slower : faster > 0 ? .faster : .same
            kinds.append(KindVerdict(kind: k, flag: flag, rows: rs.count, slowerRows: slower, fasterRows: faster,
                                     largestChange: largest?.0, largestAt: largest?.1))
        }
        return BenchComparison(baseline: baseline.name, current: current.name, threshold: threshold, rows: rows, kinds: kinds,
                               baselineMatrixSeconds: baseline.matrix?.seconds, currentMatrixSeconds: current.matrix?.seconds)
    }
}

/// What the guest sends over the serial line, one marked JSON line each, so a run that dies
/// keeps every finished point.
public enum BenchEvent: Codable, Equatable, Sendable {
    case header(BenchRun, planned: Int)
    case point(BenchPoint)
    case cHelper(CHelperResult)
    case end(seconds: Double)

    public static let marker = "VFXB "

    enum CodingKeys: String, CodingKey { case type, run, planned, point, cHelper, seconds }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(String.self, forKey: .type) {
        case "header": self = .header(try c.decode(BenchRun.self, forKey: .run), planned: try c.decode(Int.self, forKey: .planned))
        case "point": self = .point(try c.decode(BenchPoint.self, forKey: .point))
        case "c-helper": self = .cHelper(try c.decode(CHelperResult.self, forKey: .cHelper))
        case "end": self = .end(seconds: try c.decode(Double.self, forKey: .seconds))
        case let t: throw DecodingError.dataCorruptedError(forKey: .type, in: c, debugDescription: "unknown bench event \(t)")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .header(let r, let n): try c.encode("header", forKey: .type); try c.encode(r, forKey: .run); try c.encode(n, forKey: .planned)
        case .point(let p): try c.encode("point", forKey: .type); try c.encode(p, forKey: .point)
        case .cHelper(let h): try c.encode("c-helper", forKey: .type); try c.encode(h, forKey: .cHelper)
        case .end(let s): try c.encode("end", forKey: .type); try c.encode(s, forKey: .seconds)
        }
    }

    public var line: String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Self.marker + String(decoding: (try? enc.encode(self)) ?? Data(), as: UTF8.self) + "\n"
    }

    public static func parse(_ line: Substring) -> BenchEvent? {
        guard let r = line.range(of: marker) else { return nil }
        return try? JSONDecoder().decode(BenchEvent.self, from: Data(line[r.upperBound...].utf8))
    }
}

/// A (possibly truncated) bench stream put back together.
public struct BenchStreamContents {
    public var run: BenchRun?
    public var planned = 0
    public var finished = false

    public init(text: String) {
        for line in text.split(whereSeparator: \.isNewline) {
            switch BenchEvent.parse(line) {
            case .header(let r, let n): run = r; planned = n
            case .point(let p): run?.points.append(p)
            case .cHelper(let h): run?.cHelper = h
            case .end(let s): run?.seconds = s; finished = true
            case nil: continue
            }
        }
        run?.recompute()
    }

    public var pointCount: Int { run?.points.count ?? 0 }
}
