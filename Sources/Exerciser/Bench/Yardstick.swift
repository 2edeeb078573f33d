import CVFIO
import Foundation
import VFIO

/// Fixed user-space work timed in the guest a few times per boot, so two runs can tell whether
/// the host itself ran at another speed (another tenant, the host's memory or clock) — a shift
/// that every pass of a run shares and its noise floor cannot see. No system call is timed: the
/// guest kernel under test must not move it.
public struct Yardstick: Codable, Equatable, Sendable {
    /// When in the run: "start", "comparison", "guest", "end".
    public var at: String
    /// Writing `writeBytes` of resident 4K anonymous pages `writePasses` times, faulted in
    /// beforehand (not timed): the emulated memory path.
    public var writeNanos: UInt64
    /// `cpuIterations` rounds of xorshift: the emulated CPU alone.
    public var cpuNanos: UInt64

    public static let writeBytes = 32 << 20
    /// One pass took 2.4-5.9 ms under TCG, too short against a deschedule (44-74 % spread).
    public static let writePasses = 8
    public static let cpuIterations = 4_000_000
    static let madvNoHugepage: Int32 = 15

    public init(at: String, writeNanos: UInt64, cpuNanos: UInt64) {
        self.at = at
        self.writeNanos = writeNanos
        self.cpuNanos = cpuNanos
    }

    /// nil when the memory could not be mapped.
    public static func measure(at: String) -> Yardstick? {
        let p = mmap(nil, writeBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else { return nil }
        defer { munmap(p, writeBytes) }
        _ = madvise(p, writeBytes, madvNoHugepage)  // 4K pages whatever the guest's THP setting
        memset(p, 1, writeBytes)  // the faults, untimed
        return Yardstick(at: at, writeNanos: cvfio_yardstick_write(p, writeBytes, Int32(writePasses)),
                         cpuNanos: cvfio_yardstick_cpu(UInt64(cpuIterations)))
    }
}

/// How far the host's speed moved between two runs, from their yardsticks.
public struct HostDrift: Codable, Equatable, Sendable {
    /// current / baseline of the median stage.
    public var write: Double
    public var cpu: Double
    /// The larger of the two runs' own spread (largest / smallest stage median − 1).
    public var writeFloor: Double
    public var cpuFloor: Double
    /// The host was slower (> 1) or faster (< 1) in the current run beyond the yardsticks' own
    /// spread: the factor the limits are widened by on that side; 1 where it did not move, and
    /// where the runs booted different kernels (a kernel that slows user space is not the host).
    public var slower: Double
    public var faster: Double
    public var sameKernel: Bool

    /// Each stage's samples (a run of one `at`) give their median, so one descheduled sample does
    /// not count; the drift is the ratio of the two runs' medians of those, the spread each run's
    /// largest / smallest stage median − 1.
    public init?(baseline: [Yardstick], current: [Yardstick], sameKernel: Bool = true) {
        guard !baseline.isEmpty, !current.isEmpty else { return nil }
        func median(_ xs: [Double]) -> Double { BenchMath.median(xs) ?? 0 }
        func stages(_ ys: [Yardstick], _ f: (Yardstick) -> UInt64) -> [Double] {
            var groups: [[Double]] = []
            for (i, y) in ys.enumerated() {
                if i == 0 || ys[i - 1].at != y.at { groups.append([]) }
                groups[groups.count - 1].append(Double(f(y)))
            }
            return groups.map(median)
        }
        func spread(_ xs: [Double]) -> Double { xs.max()! / max(1, xs.min()!) - 1 }
        let bm = stages(baseline, \.writeNanos), cm = stages(current, \.writeNanos)
        let bc = stages(baseline, \.cpuNanos), cc = stages(current, \.cpuNanos)
        write = median(cm) / max(1, median(bm))
        cpu = median(cc) / max(1, median(bc))
        writeFloor = max(spread(bm), spread(cm))
        cpuFloor = max(spread(bc), spread(cc))
        slower = 1
        faster = 1
        self.sameKernel = sameKernel
        guard sameKernel else { return }
        for (r, f) in [(write, writeFloor), (cpu, cpuFloor)] {
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
