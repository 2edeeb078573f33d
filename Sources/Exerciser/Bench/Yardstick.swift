import Foundation
import VFIO

/// A fixed piece of work timed in the guest a few times per boot, so two runs can tell whether
/// the host itself ran at another speed (another tenant, the host's memory or clock) — a shift
/// that every pass of a run shares and its noise floor cannot see.
public struct Yardstick: Codable, Equatable, Sendable {
    /// When in the run: "start", "comparison", "guest", "end".
    public var at: String
    /// Faulting in and writing `memoryBytes` of 4K anonymous pages, then unmapping them: kernel
    /// page work like pinning's.
    public var memoryNanos: UInt64
    /// `cpuIterations` rounds of xorshift: the emulated CPU alone.
    public var cpuNanos: UInt64

    public static let memoryBytes = 32 << 20
    public static let cpuIterations = 4_000_000
    static let madvNoHugepage: Int32 = 15

    public init(at: String, memoryNanos: UInt64, cpuNanos: UInt64) {
        self.at = at
        self.memoryNanos = memoryNanos
        self.cpuNanos = cpuNanos
    }

    /// nil when the memory could not be mapped.
    public static func measure(at: String) -> Yardstick? {
        let t0 = monotonicNanos()
        let p = mmap(nil, memoryBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else { return nil }
        _ = madvise(p, memoryBytes, madvNoHugepage)  // 8192 faults, not a handful of THPs
        for off in stride(from: 0, to: memoryBytes, by: PageSize.base) { p.storeBytes(of: UInt8(truncatingIfNeeded: off >> 12), toByteOffset: off, as: UInt8.self) }
        munmap(p, memoryBytes)
        let t1 = monotonicNanos()
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<cpuIterations { x ^= x << 13; x ^= x >> 7; x ^= x << 17 }
        sink = x
        return Yardstick(at: at, memoryNanos: t1 - t0, cpuNanos: monotonicNanos() - t1)
    }
    nonisolated(unsafe) static var sink: UInt64 = 0
}

/// How far the host's speed moved between two runs, from their yardsticks.
public struct HostDrift: Codable, Equatable, Sendable {
    /// current / baseline of the median sample.
    public var memory: Double
    public var cpu: Double
    /// The larger of the two runs' own spread (largest / smallest sample − 1).
    public var memoryFloor: Double
    public var cpuFloor: Double
    /// The host was slower (> 1) or faster (< 1) in the current run beyond the yardsticks' own
    /// spread: the factor the limits are widened by on that side; 1 where it did not move.
    public var slower: Double
    public var faster: Double

    /// Each stage's samples (a run of one `at`) give their median, so one descheduled sample does
    /// not count; the drift is the ratio of the two runs' medians of those, the spread each run's
    /// largest / smallest stage median − 1.
    public init?(baseline: [Yardstick], current: [Yardstick]) {
        guard !baseline.isEmpty, !current.isEmpty else { return nil }
        func median(_ xs: [Double]) -> Double {
            let s = xs.sorted()
            return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
        func stages(_ ys: [Yardstick], _ f: (Yardstick) -> UInt64) -> [Double] {
            var groups: [[Double]] = []
            for (i, y) in ys.enumerated() {
                if i == 0 || ys[i - 1].at != y.at { groups.append([]) }
                groups[groups.count - 1].append(Double(f(y)))
            }
            return groups.map(median)
        }
        func spread(_ xs: [Double]) -> Double { xs.max()! / max(1, xs.min()!) - 1 }
        let bm = stages(baseline, \.memoryNanos), cm = stages(current, \.memoryNanos)
        let bc = stages(baseline, \.cpuNanos), cc = stages(current, \.cpuNanos)
        memory = median(cm) / max(1, median(bm))
        cpu = median(cc) / max(1, median(bc))
        memoryFloor = max(spread(bm), spread(cm))
        cpuFloor = max(spread(bc), spread(cc))
        slower = 1
        faster = 1
        for (r, f) in [(memory, memoryFloor), (cpu, cpuFloor)] {
            if r > 1 + f { slower = max(slower, r) }
            if r < 1 / (1 + f) { faster = max(faster, 1 / r) }
        }
    }

    public var moved: Bool { slower > 1 || faster > 1 }

    /// A row's change (current/baseline − 1) against its limit, the host's drift allowed for.
    public static func flag(change: Double, limit: Double, drift: HostDrift?) -> BenchComparison.Flag {
        let up = (1 + limit) * (drift?.slower ?? 1), down = (1 + limit) * (drift?.faster ?? 1)
        return 1 + change > up ? .slower : 1 + change < 1 / down ? .faster : .same
    }
}
