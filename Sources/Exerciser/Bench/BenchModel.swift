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
    /// getrusage(RUSAGE_THREAD) over the timed pairs, µs: tick-sampled, a cross-check only.
    public var userMicros: Double?
    public var systemMicros: Double?
    /// The thread's CPU time over the timed pairs, exact (CLOCK_THREAD_CPUTIME_ID), µs.
    public var cpuMicros: Double?
    /// Each timed ioctl bracketed by thread-CPU reads: the kernel's share, exactly.
    public var brackets: CPUBrackets?
    /// Which pass over the sweep measured this (a pass's point); nil once the passes are merged.
    public var pass: Int?
    /// The merged passes, in order: each one's medians (the repeats the row's noise comes from).
    public var passes: [PassSummary]?
    /// Boots the passes came from (bench --boots); nil: one.
    public var boots: Int?

    public init(backend: String, kind: String, source: String = "swift", size: UInt64, status: Status = .ok, reason: String? = nil,
                warmup: Int = 0, mapNanos: [UInt64] = [], unmapNanos: [UInt64] = [], properties: [String: String] = [:],
                seconds: Double? = nil, userMicros: Double? = nil, systemMicros: Double? = nil, cpuMicros: Double? = nil) {
        self.cpuMicros = cpuMicros
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
        self.userMicros = userMicros
        self.systemMicros = systemMicros
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

    /// CPU µs per ioctl (a map or an unmap): the thread's total, exact.
    public var cpuPerCall: Double? { perCall(cpuMicros) }
    /// The kernel's share per ioctl (inside the brackets less an empty bracket's inside), µs.
    public var kernelPerCall: Double? { perCall(brackets.map { $0.kernelNanos / 1e3 }) }
    /// The tool's own side per ioctl: the total less the kernel's share and the brackets' cost, µs.
    public var toolPerCall: Double? { perCall(cpuMicros.flatMap { brackets?.toolNanos(threadCPUNanos: $0 * 1e3) }.map { $0 / 1e3 }) }
    /// getrusage's split, tick-sampled: the cross-check.
    public var rusageUserPerCall: Double? { perCall(userMicros) }
    public var rusageSystemPerCall: Double? { perCall(systemMicros) }
    /// Per ioctl: the bracketed calls when known (a guest's pair is one call per slot each way).
    func perCall(_ total: Double?) -> Double? {
        guard let total else { return nil }
        let calls = brackets?.calls ?? 2 * mapNanos.count
        return calls > 0 ? total / Double(calls) : nil
    }

    /// The value a baseline compares: the geometric mean of the passes' medians (each pass a
    /// repeat of the row), the pooled median for a run without passes.
    public var mapCenter: Double? { center(\.mapP50) ?? map.map { Double($0.p50) } }
    public var unmapCenter: Double? { center(\.unmapP50) ?? unmap.map { Double($0.p50) } }
    func center(_ f: KeyPath<PassSummary, UInt64>) -> Double? {
        guard let ps = passes, !ps.isEmpty else { return nil }
        return BenchMath.geometricMean(ps.map { Double($0[keyPath: f]) })
    }

    /// This row's noise: the largest change between two of its passes' medians.
    public var mapFloor: Double? { passes.flatMap { NoiseFloor.largest($0.map { Double($0.mapP50) }) } }
    public var unmapFloor: Double? { passes.flatMap { NoiseFloor.largest($0.map { Double($0.unmapP50) }) } }

    /// The passes of one row (same key and source) as one point: samples pooled, CPU summed,
    /// each pass's medians kept. An error in any pass makes the row an error; passes that
    /// skipped are left out unless all did.
    public static func merged(_ ps: [BenchPoint]) -> BenchPoint? {
        guard let first = ps.first else { return nil }
        if ps.count == 1 && first.pass == nil { return first }
        if let bad = ps.first(where: { $0.status == .error }) {
            var p = bad
            p.pass = nil
            p.reason = "pass \((bad.pass ?? 0) + 1) of \(ps.count): \(bad.reason ?? "error")"
            return p
        }
        let ok = ps.filter { $0.status == .ok }
        guard !ok.isEmpty else {
            var p = first
            p.pass = nil
            return p
        }
        var p = pooled(ok)
        p.passes = ok.compactMap { q in
            guard let m = q.map, let u = q.unmap else { return nil }
            return PassSummary(mapP50: m.p50, unmapP50: u.p50, n: m.count)
        }
        if ok.count < ps.count { p.reason = "\(ps.count - ok.count) of \(ps.count) passes skipped: \(ps.first { $0.status == .skip }?.reason ?? "")" }
        return p
    }

    /// Samples pooled, CPU and brackets summed over points of one row.
    static func pooled(_ ok: [BenchPoint]) -> BenchPoint {
        func sum(_ f: (BenchPoint) -> Double?) -> Double? {
            let xs = ok.compactMap(f)
            return xs.count == ok.count ? xs.reduce(0, +) : nil
        }
        let first = ok[0]
        var p = BenchPoint(backend: first.backend, kind: first.kind, source: first.source, size: first.size, warmup: first.warmup,
                           mapNanos: ok.flatMap(\.mapNanos), unmapNanos: ok.flatMap(\.unmapNanos), properties: first.properties,
                           seconds: sum(\.seconds), userMicros: sum(\.userMicros), systemMicros: sum(\.systemMicros), cpuMicros: sum(\.cpuMicros))
        p.brackets = CPUBrackets.sum(ok.map(\.brackets))
        return p
    }

    /// One row measured in several boots (bench --boots): each boot's passes one after the
    /// other, so a state that lasts a boot enters the row's floor; samples pooled. An error in
    /// any boot makes the row an error; boots that skipped it are left out unless all did.
    public static func acrossBoots(_ ps: [BenchPoint]) -> BenchPoint? {
        guard let first = ps.first else { return nil }
        if ps.count == 1 { return first }
        if let bad = ps.first(where: { $0.status == .error }) { return bad }
        let ok = ps.filter { $0.status == .ok }
        guard !ok.isEmpty else { return first }
        var p = pooled(ok)
        p.passes = ok.flatMap { $0.passes ?? [] }
        p.boots = ok.count
        if ok.count < ps.count { p.reason = "\(ps.count - ok.count) of \(ps.count) boots skipped: \(ps.first { $0.status == .skip }?.reason ?? "")" }
        return p
    }

    /// Passes per boot: what the margin of a comparison is set for (the floor spans the boots).
    public var passesPerBoot: Int? { passes.map { $0.count / max(1, boots ?? 1) } }

    /// Per-pass points (as the stream carries them) merged per row, in the order rows first appear.
    public static func mergePasses(_ ps: [BenchPoint]) -> [BenchPoint] { rows(ps).compactMap(merged) }

    /// Points grouped per row (source, backend, kind, size), rows in the order they first appear.
    static func rows(_ ps: [BenchPoint]) -> [[BenchPoint]] {
        var order: [String] = []
        var groups: [String: [BenchPoint]] = [:]
        for p in ps {
            let k = "\(p.source) \(p.backend) \(p.kind) \(p.size)"
            if groups[k] == nil { order.append(k) }
            groups[k, default: []].append(p)
        }
        return order.map { groups[$0]! }
    }
}

/// One pass of a row: its medians and sample count.
public struct PassSummary: Codable, Equatable, Sendable {
    public var mapP50: UInt64
    public var unmapP50: UInt64
    public var n: Int
    public init(mapP50: UInt64, unmapP50: UInt64, n: Int) {
        self.mapP50 = mapP50
        self.unmapP50 = unmapP50
        self.n = n
    }
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
    /// The comparison: rounds, pairs per block, the schedule's seed (nil in runs before it).
    public var rounds: Int?
    public var roundPairs: Int?
    public var seed: UInt64?
    /// Passes over the whole sweep (every point repeated, interleaved; nil in runs before them).
    public var passes: Int?
    /// Guest-sized maps: RAM sizes, q35's max-ram-below-4g, the backend.
    public var guestSizes: [UInt64]?
    public var guestBelow4G: UInt64?
    public var guestBackend: String?

    public init(backends: [String], kinds: [String], sizes: [UInt64], repetitions: Int, warmup: Int, minRepetitions: Int,
                budgetSeconds: Double, iova: UInt64, rounds: Int? = nil, roundPairs: Int? = nil, seed: UInt64? = nil,
                guestSizes: [UInt64]? = nil, guestBelow4G: UInt64? = nil, guestBackend: String? = nil, passes: Int? = nil) {
        self.passes = passes
        self.rounds = rounds
        self.roundPairs = roundPairs
        self.seed = seed
        self.guestSizes = guestSizes
        self.guestBelow4G = guestBelow4G
        self.guestBackend = guestBackend
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

/// One block of the comparison: one side's map/unmap pairs at one point in one round, in a
/// container opened and a region built for it alone.
public struct RoundSample: Codable, Equatable, Sendable {
    public var backend: String
    public var size: UInt64
    public var round: Int
    public var side: BenchSide
    /// 0 when this side ran first in its round.
    public var order: Int
    public var status: BenchPoint.Status
    public var reason: String?
    public var mapNanos: [UInt64]
    public var unmapNanos: [UInt64]
    public var userMicros: Double?
    public var systemMicros: Double?
    public var cpuMicros: Double?
    public var brackets: CPUBrackets?
    public var anonHugeKB: String?

    public init(backend: String, size: UInt64, round: Int, side: BenchSide, order: Int, status: BenchPoint.Status = .ok, reason: String? = nil,
                mapNanos: [UInt64] = [], unmapNanos: [UInt64] = [], userMicros: Double? = nil, systemMicros: Double? = nil,
                cpuMicros: Double? = nil, brackets: CPUBrackets? = nil, anonHugeKB: String? = nil) {
        self.cpuMicros = cpuMicros
        self.brackets = brackets
        self.backend = backend
        self.size = size
        self.round = round
        self.side = side
        self.order = order
        self.status = status
        self.reason = reason
        self.mapNanos = mapNanos
        self.unmapNanos = unmapNanos
        self.userMicros = userMicros
        self.systemMicros = systemMicros
        self.anonHugeKB = anonHugeKB
    }

    var mapMedian: Double? { BenchMath.median(mapNanos.map(Double.init)) }
    var unmapMedian: Double? { BenchMath.median(unmapNanos.map(Double.init)) }
    var calls: Int { mapNanos.count + unmapNanos.count }
    /// µs in the block: the kernel's share of its ioctls, and the tool's own side (exact).
    var kernelMicros: Double? { brackets.map { $0.kernelNanos / 1e3 } }
    var toolMicros: Double? { cpuMicros.flatMap { brackets?.toolNanos(threadCPUNanos: $0 * 1e3) }.map { $0 / 1e3 } }
}

/// Swift vs C at one (backend, size): paired per-round ratios of the block medians with their
/// bootstrap interval, and the CPU time per call split into user and system.
public struct ComparisonRow: Codable, Equatable, Sendable {
    public var backend: String
    public var size: UInt64
    /// Rounds where both sides measured.
    public var rounds: Int
    public var map: Interval?
    public var unmap: Interval?
    public var mapVerdict: RatioVerdict?
    public var unmapVerdict: RatioVerdict?
    /// µs per call, over all rounds of each side: the tool's own side (user) and the kernel's
    /// share (system) from the CPU brackets, exact; their total.
    public var swiftUser: Double?
    public var swiftSystem: Double?
    public var cUser: Double?
    public var cSystem: Double?
    public var swiftCPU: Double?
    public var cCPU: Double?
    /// Swift − C µs per call, paired per round: user (the tool's own side), system (the
    /// kernel's share), all CPU.
    public var userOverhead: Interval?
    public var systemOverhead: Interval?
    public var cpuOverhead: Interval?
    /// Rounds whose two regions got different AnonHugePages.
    public var thpDiffer: Int

    public static func rows(_ samples: [RoundSample], seed: UInt64 = 1) -> [ComparisonRow] {
        let ok = samples.filter { $0.status == .ok && !$0.mapNanos.isEmpty }
        var keys: [BenchPoint.Key] = []
        for s in ok where !keys.contains(BenchPoint.Key(backend: s.backend, kind: "anon-private", size: s.size)) {
            keys.append(BenchPoint.Key(backend: s.backend, kind: "anon-private", size: s.size))
        }
        var out: [ComparisonRow] = []
        for k in keys.sorted() {
            let mine = ok.filter { $0.backend == k.backend && $0.size == k.size }
            var pairs: [(s: RoundSample, c: RoundSample)] = []
            for sw in mine where sw.side == .swift {
                if let c = mine.first(where: { $0.side == .c && $0.round == sw.round }) { pairs.append((sw, c)) }
            }
            guard !pairs.isEmpty else { continue }
            func ratio(_ f: (RoundSample) -> Double?) -> Interval? {
                let a = pairs.compactMap { f($0.s) }, b = pairs.compactMap { f($0.c) }
                return a.count == pairs.count && b.count == pairs.count ? Bootstrap.ratio(a, b, seed: seed) : nil
            }
            func perCall(_ side: BenchSide, _ f: (RoundSample) -> Double?) -> Double? {
                let xs = mine.filter { $0.side == side }
                let t = xs.compactMap(f), calls = xs.map(\.calls).reduce(0, +)
                return t.count == xs.count && calls > 0 ? t.reduce(0, +) / Double(calls) : nil
            }
            func diff(_ f: (RoundSample) -> Double?) -> Interval? {
                let d = pairs.compactMap { p -> Double? in
                    guard let a = f(p.s), let b = f(p.c), p.s.calls > 0, p.c.calls > 0 else { return nil }
                    return a / Double(p.s.calls) - b / Double(p.c.calls)
                }
                return d.count == pairs.count ? Bootstrap.mean(d, seed: seed) : nil
            }
            let m = ratio { $0.mapMedian }, u = ratio { $0.unmapMedian }
            out.append(ComparisonRow(backend: k.backend, size: k.size, rounds: pairs.count, map: m, unmap: u,
                                     mapVerdict: m.map(RatioVerdict.init), unmapVerdict: u.map(RatioVerdict.init),
                                     swiftUser: perCall(.swift) { $0.toolMicros }, swiftSystem: perCall(.swift) { $0.kernelMicros },
                                     cUser: perCall(.c) { $0.toolMicros }, cSystem: perCall(.c) { $0.kernelMicros },
                                     swiftCPU: perCall(.swift) { $0.cpuMicros }, cCPU: perCall(.c) { $0.cpuMicros },
                                     userOverhead: diff { $0.toolMicros }, systemOverhead: diff { $0.kernelMicros }, cpuOverhead: diff { $0.cpuMicros },
                                     thpDiffer: pairs.filter { $0.s.anonHugeKB != $0.c.anonHugeKB }.count))
        }
        return out
    }
}

/// The comparison condensed: the overhead target (≤ 5 % per call) judged only where an interval
/// lies wholly on one side of it.
public struct OverheadSummary: Codable, Equatable, Sendable {
    public static let target = 1.05
    public var intervals: Int
    public var notDistinguishable: Int
    public var within: Int
    public var over: Int
    public var undecided: Int
    /// The widest interval (high / low), where.
    public var widest: Double
    public var widestAt: String
    /// µs per call Swift − C, pooled over every round of every point: user (the tool's own
    /// side), system (the kernel's share) and all CPU, exact.
    public var userOverhead: Interval?
    public var systemOverhead: Interval?
    public var cpuOverhead: Interval?
    /// The same user figure as the median of the per-round differences: robust to the few
    /// rounds that carry an outlier.
    public var userOverheadMedian: Interval?
    /// The empty bracket, ns, over every block: what its reads leave inside it (subtracted from
    /// each call) and what it costs the thread in all; min–max over blocks.
    public var emptyInside: ClosedRange<Double>?
    public var emptyWhole: ClosedRange<Double>?
    /// Cross-check: the system share of the blocks' CPU by the brackets, and by getrusage
    /// (tick-sampled, only meaningful pooled over many blocks).
    public var bracketSystemShare: Double?
    public var rusageSystemShare: Double?

    public enum Verdict: String, Codable, Sendable {
        case met = "within the 5 % target"
        case missed = "OVER the 5 % target"
        case undecided = "cannot be judged at this noise level"
    }

    public var verdict: Verdict { over > 0 ? .missed : within > 0 && undecided == 0 ? .met : .undecided }

    public init?(_ rows: [ComparisonRow], samples: [RoundSample] = [], seed: UInt64 = 1) {
        let all = rows.flatMap { r in [(r.map, "\(r.backend) \(formatSize(r.size)) map"), (r.unmap, "\(r.backend) \(formatSize(r.size)) unmap")] }
            .compactMap { i, at in i.map { ($0, at) } }
        guard !all.isEmpty else { return nil }
        intervals = all.count
        notDistinguishable = all.filter { RatioVerdict($0.0) == .notDistinguishable }.count
        within = all.filter { TargetVerdict($0.0, target: Self.target) == .within }.count
        over = all.filter { TargetVerdict($0.0, target: Self.target) == .over }.count
        undecided = all.filter { TargetVerdict($0.0, target: Self.target) == .undecided }.count
        let w = all.max { $0.0.high / $0.0.low < $1.0.high / $1.0.low }!
        widest = w.0.high / w.0.low
        widestAt = w.1
        // Per (backend, size, round): Swift − C µs per call.
        let ok = samples.filter { $0.status == .ok && $0.calls > 0 }
        func pooled(_ f: (RoundSample) -> Double?, median: Bool = false) -> Interval? {
            var d: [Double] = []
            for s in ok where s.side == .swift {
                guard let c = ok.first(where: { $0.side == .c && $0.backend == s.backend && $0.size == s.size && $0.round == s.round }),
                      let a = f(s), let b = f(c) else { continue }
                d.append(a / Double(s.calls) - b / Double(c.calls))
            }
            return median ? Bootstrap.median(d, seed: seed) : Bootstrap.mean(d, seed: seed)
        }
        userOverhead = pooled { $0.toolMicros }
        userOverheadMedian = pooled({ $0.toolMicros }, median: true)
        systemOverhead = pooled { $0.kernelMicros }
        cpuOverhead = pooled { $0.cpuMicros }
        let br = ok.compactMap(\.brackets)
        func range(_ xs: [Double]) -> ClosedRange<Double>? { xs.min().map { $0...xs.max()! } }
        emptyInside = range(br.map(\.emptyInside))
        emptyWhole = range(br.map(\.emptyWhole))
        let withBoth = ok.filter { $0.kernelMicros != nil && $0.cpuMicros != nil }
        let cpu = withBoth.compactMap(\.cpuMicros).reduce(0, +)
        bracketSystemShare = cpu > 0 ? withBoth.compactMap(\.kernelMicros).reduce(0, +) / cpu : nil
        let ru = ok.filter { $0.userMicros != nil && $0.systemMicros != nil }
        let ruTotal = ru.map { $0.userMicros! + $0.systemMicros! }.reduce(0, +)
        rusageSystemShare = ruTotal > 0 ? ru.map { $0.systemMicros! }.reduce(0, +) / ruTotal : nil
    }
}

/// Run-to-run spread of the Swift side's repeated points (the comparison's rounds): what a
/// baseline comparison must exceed before it calls a change.
public struct NoiseMeasurement: Codable, Equatable, Sendable {
    public struct PerSize: Codable, Equatable, Sendable {
        public var size: UInt64
        public var floor: Double
        public var pairs: Int
        /// The largest change between two repeats: what a baseline row must exceed.
        public var largest: Double?
    }

    public var quantile: Double
    /// Over every repeated point.
    public var floor: Double
    public var pairs: Int
    public var perSize: [PerSize]

    /// Groups are (backend, size, map or unmap); each repeat is one round's block median.
    public init?(_ samples: [RoundSample]) {
        let ok = samples.filter { $0.side == .swift && $0.status == .ok && !$0.mapNanos.isEmpty }
        func groups(_ xs: [RoundSample]) -> [[Double]] {
            var g: [String: [Double]] = [:]
            for s in xs {
                g["\(s.backend) \(s.size) map", default: []].append(s.mapMedian ?? 0)
                g["\(s.backend) \(s.size) unmap", default: []].append(s.unmapMedian ?? 0)
            }
            return g.keys.sorted().map { g[$0]! }
        }
        guard let all = NoiseFloor.spread(groups(ok)) else { return nil }
        quantile = NoiseFloor.quantile
        floor = all.floor
        pairs = all.pairs
        perSize = Set(ok.map(\.size)).sorted().compactMap { size in
            let g = groups(ok.filter { $0.size == size })
            return NoiseFloor.spread(g).map { PerSize(size: size, floor: $0.floor, pairs: $0.pairs, largest: NoiseFloor.spread(g, quantile: 1)?.floor) }
        }
    }

    /// The largest repeat-to-repeat change at `size` (else the largest of all sizes): a baseline
    /// compares many rows, and a 95 % band would flag about one in twenty of them by chance.
    public func limit(at size: UInt64) -> Double {
        let all = perSize.map { $0.largest ?? $0.floor }
        return perSize.first { $0.size == size }.map { $0.largest ?? $0.floor } ?? all.max() ?? floor
    }

    /// The floor at `size`: its own when repeated, else the largest measured (the safe side).
    public func floor(at size: UInt64) -> Double {
        perSize.first { $0.size == size }?.floor ?? perSize.map(\.floor).max() ?? floor
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
    /// The comparison's blocks, Swift and C alternating (nil in runs before it).
    public var rounds: [RoundSample]?
    public var comparison: [ComparisonRow]?
    public var overheadSummary: OverheadSummary?
    /// The run-to-run spread of repeated points, from the Swift blocks.
    public var noise: NoiseMeasurement?
    public var matrix: MatrixTiming?
    /// The same matrix with the edus as the only data-check engines (no NVMe): the comparison.
    public var eduMatrix: MatrixTiming?
    /// Guest problems seen by the harness (panics, splats, a killed guest).
    public var incidents: [String]
    /// Guest-side wall time of the bench; QEMU start to power-off when run through the VM.
    public var seconds: Double?
    public var qemuSeconds: Double?
    /// The host's speed through the run, for comparisons (nil in runs before it).
    public var yardsticks: [Yardstick]?

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
        incidents = []
        recompute()
    }

    /// Boots the points were measured in (bench --boots); nil: one.
    public var boots: Int?

    /// Runs of one kernel in several boots as one run: each row's passes from every boot (its
    /// floor then spans boots), incidents and times added up; the Swift/C comparison and the
    /// rest of the first boot's.
    public static func acrossBoots(_ runs: [BenchRun]) -> BenchRun? {
        guard var r = runs.first else { return nil }
        guard runs.count > 1 else { return r }
        r.points = BenchPoint.rows(runs.flatMap(\.points)).compactMap(BenchPoint.acrossBoots)
        r.boots = runs.count
        r.incidents = runs.enumerated().flatMap { i, x in x.incidents.map { "boot \(i + 1): \($0)" } }
        r.seconds = runs.compactMap(\.seconds).reduce(0, +)
        r.qemuSeconds = runs.compactMap(\.qemuSeconds).reduce(0, +)
        let ys = runs.flatMap { $0.yardsticks ?? [] }
        r.yardsticks = ys.isEmpty ? nil : ys
        return r
    }

    /// Derived fields from the samples: called whenever points or the C helper's result change.
    public mutating func recompute() {
        let samples = rounds ?? []
        let rows = ComparisonRow.rows(samples, seed: settings.seed ?? 1)
        comparison = rows.isEmpty ? nil : rows
        overheadSummary = OverheadSummary(rows, samples: samples, seed: settings.seed ?? 1)
        noise = NoiseMeasurement(samples)
        // The C side's blocks pooled per point: its curve in the plot.
        if cHelper != nil {
            var pts: [BenchPoint] = []
            for k in Set(samples.filter { $0.side == .c && $0.status == .ok }.map { BenchPoint.Key(backend: $0.backend, kind: "anon-private", size: $0.size) }).sorted() {
                let xs = samples.filter { $0.side == .c && $0.status == .ok && $0.backend == k.backend && $0.size == k.size }
                pts.append(BenchPoint(backend: k.backend, kind: k.kind, source: "c", size: k.size, mapNanos: xs.flatMap(\.mapNanos),
                                      unmapNanos: xs.flatMap(\.unmapNanos), userMicros: xs.compactMap(\.userMicros).reduce(0, +),
                                      systemMicros: xs.compactMap(\.systemMicros).reduce(0, +), cpuMicros: xs.compactMap(\.cpuMicros).reduce(0, +)))
                pts[pts.count - 1].brackets = CPUBrackets.sum(xs.map(\.brackets))
            }
            cHelper?.points = pts
        }
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
        /// The change this row had to exceed (the larger of its map and unmap limits).
        public var threshold: Double
        /// Per call: the larger of the two runs' largest repeat-to-repeat change of this row,
        /// and the limit set from it (see `compare`); nil where this row has no repeats.
        public var mapFloor: Double?
        public var unmapFloor: Double?
        public var mapLimit: Double?
        public var unmapLimit: Double?
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
    /// How the rows' thresholds were set, for the report.
    public var thresholdSource: String
    /// The fixed threshold (--threshold): a floor under the measured one, or the only one.
    public var threshold: Double?
    public var rows: [Row]
    public var kinds: [KindVerdict]
    public var baselineMatrixSeconds: Double?
    public var currentMatrixSeconds: Double?
    /// The host's speed in the current run against the baseline's, from their yardsticks.
    public var hostDrift: HostDrift?
    /// Both runs' `tool` when they differ: another build measured one of them.
    public var tools: [String]?

    public var slowerKinds: [String] { kinds.filter { $0.flag == .slower }.map(\.kind) }

    /// Used when neither run measured its noise and no --threshold is given.
    public static let fallbackThreshold = 0.2

    /// The least any row's limit is: what passes within one run cannot see. Two unchanged
    /// debian:6.1 runs under TCG, host load average 7–9, moved rows whose passes agreed within
    /// 2–5 % by up to 10.6 %, all the same way: the host's speed, which a run's passes share.
    public static let minimumLimit = 0.15

    /// Each row against its own noise. A row's value is the geometric mean of its passes'
    /// medians; its floor, per call, is the larger of the two runs' largest change between two of
    /// its passes; the change must exceed margin(n) × floor (in logs, n the fewer passes of the two
    /// runs: `NoiseFloor.margin`, set so an unchanged row crosses it with probability 1e-4 under
    /// Gaussian noise), and `threshold` (a fraction) when given. Symmetric in ratio: slower past
    /// ×(1+t), faster past ÷(1+t). Rows without repeats (runs from before the passes) fall back to
    /// the run's noise floor at their size, else to the fixed 20 %; the rule used is stated.
    public static func compare(baseline: BenchRun, current: BenchRun, threshold: Double? = nil) -> BenchComparison {
        let base = Dictionary(baseline.points.filter { $0.status == .ok }.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let cur = Dictionary(current.points.filter { $0.status == .ok }.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        // From the stored blocks, so an older file is read with today's rule.
        let floors = [baseline, current].compactMap { NoiseMeasurement($0.rounds ?? []) }
        var used: [String] = []
        func note(_ s: String) { if !used.contains(s) { used.append(s) } }
        func fallback(_ size: UInt64) -> Double {
            if floors.isEmpty {
                note(threshold == nil ? String(format: "no repeats in either run: the fixed %g %%", fallbackThreshold * 100)
                                             : String(format: "no repeats in either run: --threshold %g %%", threshold! * 100))
                return threshold ?? fallbackThreshold
            }
            note("rows without repeats: the comparison blocks' largest repeat-to-repeat change at their size")
            return max(floors.map { $0.limit(at: size) }.max()!, threshold ?? 0)
        }
        /// (floor, limit) for one call of one row.
        func limit(_ b: BenchPoint?, _ c: BenchPoint?, _ f: KeyPath<BenchPoint, Double?>, size: UInt64) -> (Double?, Double) {
            let own = [b, c].compactMap { $0?[keyPath: f] }
            let n = [b, c].compactMap { $0?.passesPerBoot }.filter { $0 >= 2 }.min()
            guard let floor = own.max(), let n, let m = NoiseFloor.margin(passes: n) else { return (nil, fallback(size)) }
            note(String(format: "its own noise: beyond (1 + floor)^%g − 1, floor = the larger of the two runs' largest change between two passes of that row and call (%d passes each, per boot: an unchanged row crosses it with p ≈ %g under Gaussian noise), and at least %g %% (the run-to-run shift of the host's speed, which passes within one run share)",
                               m, n, NoiseFloor.falseFlagRate, minimumLimit * 100))
            return (floor, max(exp(m * log1p(floor)) - 1, minimumLimit, threshold ?? 0))
        }
        let drift = HostDrift(baseline: baseline.yardsticks ?? [], current: current.yardsticks ?? [],
                              sameKernel: baseline.kernelRelease == current.kernelRelease)
        if let d = drift, d.moved {
            note(String(format: "widened by the host's own drift between the runs (its yardstick: memory writes ×%.2f, CPU ×%.2f, beyond their spread of %.0f %% and %.0f %%)",
                        d.write, d.cpu, d.writeFloor * 100, d.cpuFloor * 100))
        }
        var rows: [Row] = []
        for key in Set(base.keys).union(cur.keys).sorted() {
            let b = base[key], c = cur[key]
            let (mf, ml) = limit(b, c, \.mapFloor, size: key.size)
            let (uf, ul) = limit(b, c, \.unmapFloor, size: key.size)
            var row = Row(backend: key.backend, kind: key.kind, size: key.size, baselineMapP50: b?.mapCenter.map { UInt64($0) },
                          currentMapP50: c?.mapCenter.map { UInt64($0) }, baselineUnmapP50: b?.unmapCenter.map { UInt64($0) },
                          currentUnmapP50: c?.unmapCenter.map { UInt64($0) }, threshold: max(ml, ul), mapFloor: mf, unmapFloor: uf,
                          mapLimit: ml, unmapLimit: ul, flag: .unmatched)
            if let bm = b?.mapCenter, let cm = c?.mapCenter, bm > 0 { row.mapChange = cm / bm - 1 }
            if let bu = b?.unmapCenter, let cu = c?.unmapCenter, bu > 0 { row.unmapChange = cu / bu - 1 }
            let changes = [(row.mapChange, ml), (row.unmapChange, ul)].compactMap { ch, t in ch.map { ($0, t) } }
            if !changes.isEmpty {
                let flags = changes.map { HostDrift.flag(change: $0.0, limit: $0.1, drift: drift) }
                row.flag = flags.contains(.slower) ? .slower : flags.contains(.faster) ? .faster : .same
            }
            rows.append(row)
        }
        if let t = threshold, !used.isEmpty { note(String(format: "at least --threshold %g %%", t * 100)) }
        let source = used.isEmpty ? "nothing (no rows)" : used.joined(separator: "; ")
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
        return BenchComparison(baseline: baseline.name, current: current.name, thresholdSource: source, threshold: threshold, rows: rows, kinds: kinds,
                               baselineMatrixSeconds: baseline.matrix?.seconds, currentMatrixSeconds: current.matrix?.seconds, hostDrift: drift,
                               tools: baseline.tool == current.tool ? nil : [baseline.tool, current.tool])
    }
}

/// What the guest sends over the serial line, one marked JSON line each, so a run that dies
/// keeps every finished point.
public enum BenchEvent: Codable, Equatable, Sendable {
    case header(BenchRun, planned: Int)
    case point(BenchPoint)
    case cHelper(CHelperResult)
    case round(RoundSample)
    case yardstick(Yardstick)
    case end(seconds: Double)

    public static let marker = "VFXB "

    enum CodingKeys: String, CodingKey { case type, run, planned, point, cHelper, round, yardstick, seconds }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(String.self, forKey: .type) {
        case "header": self = .header(try c.decode(BenchRun.self, forKey: .run), planned: try c.decode(Int.self, forKey: .planned))
        case "point": self = .point(try c.decode(BenchPoint.self, forKey: .point))
        case "c-helper": self = .cHelper(try c.decode(CHelperResult.self, forKey: .cHelper))
        case "round": self = .round(try c.decode(RoundSample.self, forKey: .round))
        case "yardstick": self = .yardstick(try c.decode(Yardstick.self, forKey: .yardstick))
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
        case .round(let r): try c.encode("round", forKey: .type); try c.encode(r, forKey: .round)
        case .yardstick(let y): try c.encode("yardstick", forKey: .type); try c.encode(y, forKey: .yardstick)
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
            case .round(let r):
                if run?.rounds == nil { run?.rounds = [] }
                run?.rounds?.append(r)
            case .yardstick(let y):
                if run?.yardsticks == nil { run?.yardsticks = [] }
                run?.yardsticks?.append(y)
            case .end(let s): run?.seconds = s; finished = true
            case nil: continue
            }
        }
        if let ps = run?.points { run?.points = BenchPoint.mergePasses(ps) }
        run?.recompute()
    }

    /// Points and comparison blocks received.
    public var pointCount: Int { (run?.points.count ?? 0) + (run?.rounds?.count ?? 0) }
}
