import Foundation

// The controlled comparison's arithmetic: the seeded schedule of Swift and C blocks, bootstrap
// intervals over rounds, the noise floor of repeated points and the guest layout. All pure.

/// SplitMix64: the same seed gives the same schedule and the same bootstrap resamples.
public struct SeededRNG: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Who runs a block of the comparison.
public enum BenchSide: String, Codable, Sendable, CaseIterable {
    case swift, c
}

/// The comparison's order: rounds outermost, so each point's rounds spread over the whole phase;
/// within a round every point gets one block per side, in an order drawn per (round, point).
public enum AlternationSchedule {
    public struct Block: Equatable, Sendable {
        public var round: Int
        public var point: Int
        public var side: BenchSide
    }

    public static func blocks(rounds: Int, points: Int, sides: [BenchSide], seed: UInt64) -> [Block] {
        var rng = SeededRNG(seed: seed)
        var out: [Block] = []
        for r in 0..<max(rounds, 0) {
            for p in 0..<max(points, 0) {
                for s in sides.shuffled(using: &rng) { out.append(Block(round: r, point: p, side: s)) }
            }
        }
        return out
    }
}

/// An estimate with a two-sided percentile-bootstrap interval.
public struct Interval: Codable, Equatable, Sendable {
    public var estimate: Double
    public var low: Double
    public var high: Double
    /// Independent units (rounds) behind it.
    public var n: Int

    public init(estimate: Double, low: Double, high: Double, n: Int) {
        self.estimate = estimate
        self.low = low
        self.high = high
        self.n = n
    }

    public func contains(_ v: Double) -> Bool { low <= v && v <= high }
}

public enum Bootstrap {
    public static let level = 0.95
    public static let resamples = 2000

    /// Mean of `xs` with the percentile interval of the means of `resamples` resamples (with
    /// replacement). nil for fewer than 2 values: one round gives no spread.
    public static func mean(_ xs: [Double], level: Double = level, resamples: Int = resamples, seed: UInt64 = 1) -> Interval? {
        interval(xs, level: level, resamples: resamples, seed: seed) { $0.reduce(0, +) / Double($0.count) }
    }

    /// Median of `xs` with the percentile interval of the medians of `resamples` resamples: the
    /// robust figure where a few rounds carry outliers (under TCG the host descheduling the vCPU
    /// is charged to whatever the guest thread was doing). nil for fewer than 2 values.
    public static func median(_ xs: [Double], level: Double = level, resamples: Int = resamples, seed: UInt64 = 1) -> Interval? {
        interval(xs, level: level, resamples: resamples, seed: seed) { BenchMath.median($0)! }
    }

    /// `statistic` of `xs` with the percentile interval of its values over `resamples` resamples
    /// (with replacement, drawn from `seed`).
    static func interval(_ xs: [Double], level: Double, resamples: Int, seed: UInt64, _ statistic: ([Double]) -> Double) -> Interval? {
        guard xs.count >= 2, xs.allSatisfy(\.isFinite) else { return nil }
        var rng = SeededRNG(seed: seed)
        let n = xs.count
        var values = (0..<resamples).map { _ in statistic((0..<n).map { _ in xs[Int(rng.next() % UInt64(n))] }) }
        values.sort()
        let tail = (1 - level) / 2
        let lo = values[max(0, Int((tail * Double(resamples)).rounded(.down)))]
        let hi = values[min(resamples - 1, Int(((1 - tail) * Double(resamples)).rounded(.up)) - 1)]
        return Interval(estimate: statistic(xs), low: lo, high: hi, n: n)
    }

    /// Paired ratio a_i / b_i per round: geometric mean and its interval (bootstrap of the logs).
    public static func ratio(_ a: [Double], _ b: [Double], level: Double = level, resamples: Int = resamples, seed: UInt64 = 1) -> Interval? {
        guard a.count == b.count, a.allSatisfy({ $0 > 0 }), b.allSatisfy({ $0 > 0 }) else { return nil }
        guard let m = mean(zip(a, b).map { log($0 / $1) }, level: level, resamples: resamples, seed: seed) else { return nil }
        return Interval(estimate: exp(m.estimate), low: exp(m.low), high: exp(m.high), n: m.n)
    }
}

/// A Swift/C ratio interval read against 1 (noise) and against the overhead target.
public enum RatioVerdict: String, Codable, Sendable {
    /// The interval straddles 1: Swift and C are not distinguishable.
    case notDistinguishable = "not distinguishable"
    case swiftSlower = "Swift slower"
    case swiftFaster = "Swift faster"

    public init(_ i: Interval) {
        self = i.low > 1 ? .swiftSlower : i.high < 1 ? .swiftFaster : .notDistinguishable
    }
}

public enum TargetVerdict: String, Codable, Sendable {
    /// The whole interval is at or below the target.
    case within
    /// The whole interval is above it.
    case over
    /// The interval straddles the target: the noise is too large to judge.
    case undecided

    public init(_ i: Interval, target: Double) {
        self = i.high <= target ? .within : i.low > target ? .over : .undecided
    }
}

/// How far two repeats of one point, nothing changed, move its median.
public enum NoiseFloor {
    public static let quantile = 0.95

    /// The `quantile` of |ln(m_i / m_j)| over every pair of repeats within each group, as a
    /// relative change (exp − 1): 0.12 = two repeats differ by up to 12 % in 95 % of pairs.
    /// nil without a group of at least two positive medians.
    /// quantile 1: the largest change seen between two repeats.
    public static func spread(_ groups: [[Double]], quantile: Double = quantile) -> (floor: Double, pairs: Int)? {
        var d: [Double] = []
        for g in groups {
            let xs = g.filter { $0 > 0 }
            guard xs.count >= 2 else { continue }
            for i in 0..<xs.count { for j in (i + 1)..<xs.count { d.append(abs(log(xs[i] / xs[j]))) } }
        }
        guard !d.isEmpty else { return nil }
        d.sort()
        let rank = Int((quantile * Double(d.count)).rounded(.up))
        return (exp(d[min(max(rank, 1), d.count) - 1]) - 1, d.count)
    }
}

/// The exact user/system split of timed ioctls: CLOCK_THREAD_CPUTIME_ID read right before and
/// right after each one (Sources/CVFIO/include/cvfio_cpu.h, the same code in this tool and in
/// bench/map_bench.c), and empty brackets timed in the same run. Blocks add up.
public struct CPUBrackets: Codable, Equatable, Sendable {
    /// CPU ns inside the brackets of the timed ioctls, and how many there were.
    public var insideNanos: UInt64
    public var calls: Int
    /// The calibration (medians over its empty brackets), ns: inside one empty bracket (the
    /// reads' own share of what a bracket holds), and one bracket's whole cost to the thread.
    /// Merged blocks: their mean weighted by calls, so the split of the sum is the sum of splits.
    public var emptyInside: Double
    public var emptyWhole: Double
    /// Calibrations behind it.
    public var calibrations: Int

    public init(insideNanos: UInt64, calls: Int, emptyInside: Double, emptyWhole: Double, calibrations: Int = 1) {
        self.insideNanos = insideNanos
        self.calls = calls
        self.emptyInside = emptyInside
        self.emptyWhole = emptyWhole
        self.calibrations = calibrations
    }

    /// The kernel's share of the calls, ns: inside the brackets less the empty brackets' inside
    /// (syscall entry, the pinning, exit; and libc's few-instruction stub).
    public var kernelNanos: Double { Double(insideNanos) - Double(calls) * emptyInside }

    /// What the thread spent outside the ioctls and outside the brackets, ns: the tool's own side.
    public func toolNanos(threadCPUNanos total: Double) -> Double {
        total - kernelNanos - Double(calls) * emptyWhole
    }

    /// The blocks' brackets added up; nil unless every block has them.
    public static func sum(_ bs: [CPUBrackets?]) -> CPUBrackets? {
        let br = bs.compactMap { $0 }
        guard let first = br.first, br.count == bs.count else { return nil }
        return br.dropFirst().reduce(first, +)
    }

    public static func + (a: CPUBrackets, b: CPUBrackets) -> CPUBrackets {
        let n = a.calls + b.calls
        func mix(_ x: Double, _ y: Double) -> Double { n == 0 ? (x + y) / 2 : (x * Double(a.calls) + y * Double(b.calls)) / Double(n) }
        return CPUBrackets(insideNanos: a.insideNanos + b.insideNanos, calls: n, emptyInside: mix(a.emptyInside, b.emptyInside),
                           emptyWhole: mix(a.emptyWhole, b.emptyWhole), calibrations: a.calibrations + b.calibrations)
    }
}

/// How far one row's repeats (passes over the whole sweep, interleaved) move its median, and
/// the margin a baseline comparison puts on it.
extension NoiseFloor {
    /// The largest change between two of `medians` (exp(max |ln a/b|) − 1); nil for fewer than two.
    public static func largest(_ medians: [Double]) -> Double? {
        let xs = medians.filter { $0 > 0 }
        guard xs.count >= 2, let lo = xs.min(), let hi = xs.max() else { return nil }
        return hi / lo - 1
    }

    /// The per-row false-flag rate the margin is set for: ~120 rows × 2 calls are compared, so
    /// an unchanged run is flagged somewhere with probability ≈ 1 − (1 − 1e-4)^240 ≈ 2.4 %.
    public static let falseFlagRate = 1e-4

    /// c such that, for Gaussian noise in the log of a repeat's median, an unchanged row gives
    /// |ln(pooled_A / pooled_B)| > c · max(range_A, range_B) with probability `falseFlagRate`
    /// when each run has `passes` repeats (range = largest repeat-to-repeat change in logs).
    /// Simulated (4·10⁷ draws per count): with few repeats the observed range is often far below
    /// the true spread, so the bound has to stretch it, heavily for two.
    public static func margin(passes: Int) -> Double? {
        guard passes >= 2 else { return nil }
        return marginTable[min(passes, marginTable.count + 1) - 2]
    }

    static let marginTable: [Double] = [56.2, 5.57, 2.49, 1.62, 1.22, 0.99, 0.84]
}

/// Guest RAM as QEMU's q35 lays it out, one VFIO mapping per RAM section.
public enum GuestLayout {
    public struct Slot: Equatable, Sendable, Codable {
        /// Guest physical address: the IOVA QEMU maps it at.
        public var gpa: UInt64
        public var size: UInt64
        /// Offset into the one host allocation backing the guest's RAM.
        public var hostOffset: UInt64
    }

    static let vgaHole: (UInt64, UInt64) = (0xA_0000, 0x10_0000)

    /// pc_q35_init: 2 GiB below 4 GiB when the RAM is ≥ 2.75 GiB, else up to 2.75 GiB; at most
    /// max-ram-below-4g. The VGA/BIOS window [640K, 1M) is not RAM; the rest sits above 4 GiB.
    public static func q35(ram: UInt64, maxBelow4G: UInt64 = 1 << 32) -> [Slot] {
        var lowmem: UInt64 = ram >= 0xB000_0000 ? 0x8000_0000 : 0xB000_0000
        lowmem = min(lowmem, maxBelow4G)
        let below = min(ram, lowmem)
        var out: [Slot] = []
        if below > 0 { out.append(Slot(gpa: 0, size: min(below, vgaHole.0), hostOffset: 0)) }
        if below > vgaHole.1 { out.append(Slot(gpa: vgaHole.1, size: below - vgaHole.1, hostOffset: vgaHole.1)) }
        if ram > below { out.append(Slot(gpa: 1 << 32, size: ram - below, hostOffset: below)) }
        return out
    }
}

extension BenchMath {
    /// Least-squares line y = a + b·x; nil for fewer than two distinct x.
    public static func linearFit(_ xs: [Double], _ ys: [Double]) -> (intercept: Double, slope: Double)? {
        guard xs.count == ys.count, xs.count >= 2 else { return nil }
        let n = Double(xs.count)
        let mx = xs.reduce(0, +) / n, my = ys.reduce(0, +) / n
        let sxx = xs.reduce(0) { $0 + ($1 - mx) * ($1 - mx) }
        guard sxx > 0 else { return nil }
        let sxy = zip(xs, ys).reduce(0) { $0 + ($1.0 - mx) * ($1.1 - my) }
        return (my - sxy / sxx * mx, sxy / sxx)
    }

    /// Median of doubles (mean of the middle two for an even count); nil for none.
    public static func median(_ xs: [Double]) -> Double? {
        guard !xs.isEmpty else { return nil }
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
