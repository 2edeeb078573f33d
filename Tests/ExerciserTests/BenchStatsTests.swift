import XCTest
import Foundation
@testable import Exerciser

/// The comparison's arithmetic: the alternation schedule, bootstrap intervals and their verdicts,
/// the noise floor and the baseline flags it sets, the guest layout and the growth fit.
final class BenchStatsTests: XCTestCase {

    // MARK: - Alternation schedule

    func testScheduleGivesEachPointOneBlockPerSideEveryRoundInADrawnOrder() {
        let b = AlternationSchedule.blocks(rounds: 40, points: 3, sides: [.swift, .c], seed: 7)
        XCTAssertEqual(b.count, 40 * 3 * 2)
        XCTAssertEqual(b.map(\.round), b.map(\.round).sorted(), "rounds outermost: each point's rounds spread over the phase")
        var swiftFirst = 0
        for i in stride(from: 0, to: b.count, by: 2) {
            XCTAssertEqual(b[i].round, b[i + 1].round)
            XCTAssertEqual(b[i].point, b[i + 1].point, "a point's two blocks are next to each other")
            XCTAssertEqual(Set([b[i].side, b[i + 1].side]), [.swift, .c])
            if b[i].side == .swift { swiftFirst += 1 }
        }
        // A fixed order would give 0 or 120; a fair coin stays well inside this band for this seed and any sane one.
        XCTAssertTrue((35...85).contains(swiftFirst), "Swift first in \(swiftFirst) of 120 pairs")
        XCTAssertEqual(b, AlternationSchedule.blocks(rounds: 40, points: 3, sides: [.swift, .c], seed: 7), "the seed fixes the order")
        XCTAssertNotEqual(b.map(\.side), AlternationSchedule.blocks(rounds: 40, points: 3, sides: [.swift, .c], seed: 8).map(\.side))
        XCTAssertEqual(AlternationSchedule.blocks(rounds: 2, points: 2, sides: [.swift], seed: 1).map(\.point), [0, 1, 0, 1],
                       "without the C helper: Swift blocks only (the noise floor)")
    }

    // MARK: - Bootstrap

    func testBootstrapOfTwoValuesSpansThem() throws {
        // Resample means of [0, 1] are 0, ½ or 1 with odds ¼ ½ ¼: the 95 % interval is [0, 1].
        let i = try XCTUnwrap(Bootstrap.mean([0, 1]))
        XCTAssertEqual([i.estimate, i.low, i.high], [0.5, 0, 1])
        XCTAssertNil(Bootstrap.mean([3]), "one round has no spread")
        XCTAssertNil(Bootstrap.ratio([1, 2], [1, 0]), "a zero median has no ratio")
    }

    func testBootstrapIntervalHasTheWidthOfTheMeansSpread() throws {
        // 50 values, mean 5, standard deviation ~1: the mean's 95 % interval is about ±1.96/√50 = ±0.28.
        var rng = SeededRNG(seed: 42)
        let xs = (0..<50).map { _ in (0..<12).map { _ in Double(rng.next() % 1_000_000) / 1e6 }.reduce(0, +) - 6 + 5 }
        let i = try XCTUnwrap(Bootstrap.mean(xs))
        XCTAssertTrue(i.contains(i.estimate))
        XCTAssertEqual(i.high - i.low, 2 * 1.96 * 1 / sqrt(50), accuracy: 0.15, "\(i)")
        let again = try XCTUnwrap(Bootstrap.mean(xs))
        XCTAssertEqual(i, again, "seeded: the same data give the same interval")
    }

    func testMedianIntervalIgnoresAFewOutliers() throws {
        // Nine rounds near 1 µs and one at 1000 µs (a host deschedule): the mean's interval reaches
        // past 100, the median's stays by 1.
        let xs: [Double] = [0.8, 0.9, 1.0, 1.0, 1.1, 1.2, 0.9, 1.0, 1.1, 1000]
        let mean = try XCTUnwrap(Bootstrap.mean(xs)), med = try XCTUnwrap(Bootstrap.median(xs))
        XCTAssertGreaterThan(mean.high, 100)
        XCTAssertEqual(med.estimate, 1.0)
        XCTAssertTrue(med.low >= 0.9 && med.high <= 1.2, "\(med)")
        XCTAssertNil(Bootstrap.median([1]))
    }

    func testRatioIntervalIsTheGeometricMeanOfPairedRatios() throws {
        // Ratios 0.5 and 2 per round: geometric mean 1, and the interval spans both.
        let i = try XCTUnwrap(Bootstrap.ratio([50, 400], [100, 200]))
        XCTAssertEqual(i.estimate, 1, accuracy: 1e-12)
        XCTAssertEqual(i.low, 0.5, accuracy: 1e-12)
        XCTAssertEqual(i.high, 2, accuracy: 1e-12)
        XCTAssertEqual(RatioVerdict(i), .notDistinguishable)
    }

    func testVerdictsAgainstOneAndAgainstTheTarget() {
        func iv(_ lo: Double, _ hi: Double) -> Interval { Interval(estimate: (lo + hi) / 2, low: lo, high: hi, n: 10) }
        XCTAssertEqual(RatioVerdict(iv(0.98, 1.04)), .notDistinguishable)
        XCTAssertEqual(RatioVerdict(iv(1.01, 1.04)), .swiftSlower)
        XCTAssertEqual(RatioVerdict(iv(0.4, 0.6)), .swiftFaster)
        XCTAssertEqual(TargetVerdict(iv(0.98, 1.04), target: 1.05), .within)
        XCTAssertEqual(TargetVerdict(iv(0.99, 1.08), target: 1.05), .undecided)
        XCTAssertEqual(TargetVerdict(iv(1.06, 1.2), target: 1.05), .over)
        XCTAssertEqual(TargetVerdict(iv(0.4, 0.6), target: 1.05), .within)
    }

    // MARK: - Noise floor

    func testNoiseFloorIsTheQuantileOfRepeatToRepeatChangeWithinGroups() throws {
        // Pairs of [100, 110, 121]: ×1.1, ×1.21, ×1.1.
        let q95 = try XCTUnwrap(NoiseFloor.spread([[100, 110, 121]]))
        XCTAssertEqual(q95.floor, 0.21, accuracy: 1e-9)
        XCTAssertEqual(q95.pairs, 3)
        XCTAssertEqual(try XCTUnwrap(NoiseFloor.spread([[100, 110, 121]], quantile: 0.5)).floor, 0.1, accuracy: 1e-9)
        XCTAssertEqual(try XCTUnwrap(NoiseFloor.spread([[121, 100]])).floor, 0.21, accuracy: 1e-9, "symmetric: slower and faster alike")
        XCTAssertNil(NoiseFloor.spread([[100], [200]]), "two different points are not repeats of one")
        XCTAssertEqual(try XCTUnwrap(NoiseFloor.spread([[100], [200, 200]])).floor, 0)
    }

    static func swiftBlocks(size: UInt64, medians: [UInt64]) -> [RoundSample] {
        medians.enumerated().map { BenchTests.block(.swift, round: $0.offset, size: size, map: [$0.element], unmap: [$0.element]) }
    }

    func testNoiseMeasurementUsesTheSwiftBlocksPerSize() throws {
        let samples = Self.swiftBlocks(size: 4096, medians: [100, 105, 110]) + Self.swiftBlocks(size: 1 << 20, medians: [1000, 1300])
            + [BenchTests.block(.c, round: 0, map: [1]), BenchTests.block(.c, round: 1, map: [1000])]
        let n = try XCTUnwrap(NoiseMeasurement(samples))
        XCTAssertEqual(n.perSize.map(\.size), [4096, 1 << 20])
        XCTAssertEqual(n.floor(at: 4096), 0.1, accuracy: 1e-9, "the C blocks' ×1000 is not a repeat of the Swift point")
        XCTAssertEqual(n.floor(at: 1 << 20), 0.3, accuracy: 1e-9)
        XCTAssertEqual(n.floor(at: 2 << 20), 0.3, accuracy: 1e-9, "an unrepeated size takes the largest floor")
        let wide = try XCTUnwrap(NoiseMeasurement(Self.swiftBlocks(size: 4096, medians: Array(repeating: 100, count: 39) + [200])))
        XCTAssertEqual(wide.floor, 0, "95th percentile of 780 pairs: only 39 involve the outlier")
        XCTAssertEqual(wide.limit(at: 4096), 1, accuracy: 1e-9, "the baseline limit is the largest change, the outlier's ×2")
    }

    func testRunsWithoutPassesFallBackToTheBlocksFloorPerSize() {
        var base = BenchTests.run([BenchTests.point(map: [100], unmap: [100]), BenchTests.point("memfd", map: [100], unmap: [100]),
                                   BenchTests.point("thp", map: [100], unmap: [100])])
        base.rounds = Self.swiftBlocks(size: 4096, medians: [100, 110, 105])  // largest change 10 % at 4K
        base.recompute()
        var cur = BenchTests.run([BenchTests.point(map: [108], unmap: [93]),          // inside ±10 %
                                  BenchTests.point("memfd", map: [115], unmap: [100]),  // +15 %: slower
                                  BenchTests.point("thp", map: [100], unmap: [85])], label: "debian:6.1 again")  // ÷1.18: faster
        cur.rounds = Self.swiftBlocks(size: 4096, medians: [100, 104])  // 4 %: the baseline's 10 % rules
        cur.recompute()
        let c = BenchComparison.compare(baseline: base, current: cur)
        for r in c.rows { XCTAssertEqual(r.threshold, 0.1, accuracy: 1e-9, "per row: the larger of the two floors") }
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: c.kinds.map { ($0.kind, $0.flag) }), ["anon-private": .same, "memfd": .slower, "thp": .faster])
        XCTAssertTrue(c.thresholdSource.hasPrefix("rows without repeats: the comparison blocks'"), c.thresholdSource)
        XCTAssertTrue(BenchText.comparison(c).contains("flagged only when it moved beyond rows without repeats"))
        let raised = BenchComparison.compare(baseline: base, current: cur, threshold: 0.2)
        XCTAssertTrue(raised.slowerKinds.isEmpty, "--threshold raises the bar above the measured floor")
    }

    // MARK: - Passes: every row's own noise

    /// One row measured in passes: each pass's samples are `median` repeated (so its median is that).
    static func row(_ kind: String = "anon-private", size: UInt64 = 4096, map: [UInt64], unmap: [UInt64]? = nil) -> [BenchPoint] {
        zip(map, unmap ?? map).enumerated().map { i, mu in
            var p = BenchTests.point(kind, size: size, map: [mu.0, mu.0, mu.0], unmap: [mu.1, mu.1, mu.1])
            p.pass = i
            return p
        }
    }

    static func passRun(_ rows: [[BenchPoint]], label: String = "debian:6.1") -> BenchRun {
        // Interleaved as the runner emits them: pass 0 of every row, then pass 1 …
        let flat = rows.flatMap { $0 }.sorted { ($0.pass ?? 0) < ($1.pass ?? 0) }
        return BenchTests.run(BenchPoint.mergePasses(flat), label: label)
    }

    func testPassesMergeIntoOneRowWithItsOwnSpread() throws {
        let rows = [Self.row(map: [100, 110, 105, 100], unmap: [50, 50, 60, 55]), Self.row("memfd", map: [200, 200])]
        let merged = BenchPoint.mergePasses(rows.flatMap { $0 }.sorted { ($0.pass ?? 0) < ($1.pass ?? 0) })
        XCTAssertEqual(merged.map(\.kind), ["anon-private", "memfd"], "rows in the order they first appear")
        let a = merged[0]
        XCTAssertNil(a.pass)
        XCTAssertEqual(a.passes?.map(\.mapP50), [100, 110, 105, 100])
        XCTAssertEqual(a.map?.count, 12, "samples pooled")
        XCTAssertEqual(try XCTUnwrap(a.mapFloor), 0.1, accuracy: 1e-9, "largest pass-to-pass change: 110 / 100")
        XCTAssertEqual(try XCTUnwrap(a.unmapFloor), 0.2, accuracy: 1e-9)
        XCTAssertEqual(try XCTUnwrap(a.mapCenter), pow(100.0 * 110 * 105 * 100, 0.25), accuracy: 1e-9, "geometric mean of the pass medians")
        XCTAssertEqual(merged[1].mapFloor, 0)
        // An error in any pass makes the row an error; skipped passes are left out.
        var bad = Self.row(map: [100, 100, 100])
        bad[1].status = .error
        bad[1].reason = "VFIO_IOMMU_MAP_DMA: ENOMEM"
        XCTAssertEqual(BenchPoint.merged(bad)?.status, .error)
        XCTAssertEqual(BenchPoint.merged(bad)?.reason, "pass 2 of 3: VFIO_IOMMU_MAP_DMA: ENOMEM")
        var skipped = Self.row(map: [100, 120, 100])
        skipped[2].status = .skip
        skipped[2].reason = "no hugepages"
        let sk = try XCTUnwrap(BenchPoint.merged(skipped))
        XCTAssertEqual(sk.status, .ok)
        XCTAssertEqual(sk.passes?.count, 2)
        XCTAssertEqual(sk.reason, "1 of 3 passes skipped: no hugepages")
        XCTAssertNil(NoiseFloor.largest([100]), "one pass: no spread")
    }

    func testMarginHoldsTheFalseFlagRateForGaussianNoise() {
        // Draw unchanged rows (n passes per run, log-normal noise) and count those the rule flags:
        // the margin is set for 1e-4 per call; 100 000 rows of 4 passes give ~10.
        var rng = SeededRNG(seed: 3)
        func gauss() -> Double {
            let u1 = Double(rng.next() >> 11 | 1) / Double(1 << 53), u2 = Double(rng.next() >> 11) / Double(1 << 53)
            return sqrt(-2 * log(u1)) * cos(2 * .pi * u2)
        }
        let n = 4, trials = 100_000
        let m = NoiseFloor.margin(passes: n)!
        var flagged = 0, flaggedHalf = 0
        for _ in 0..<trials {
            let a = (0..<n).map { _ in gauss() }, b = (0..<n).map { _ in gauss() }
            let d = abs(a.reduce(0, +) / Double(n) - b.reduce(0, +) / Double(n))
            let floor = max(a.max()! - a.min()!, b.max()! - b.min()!)
            if d > m * floor { flagged += 1 }
            if d > m / 2 * floor { flaggedHalf += 1 }
        }
        XCTAssertTrue((1...30).contains(flagged), "\(flagged) of \(trials) unchanged rows flagged")
        XCTAssertGreaterThan(flaggedHalf, 60, "half the margin flags far more: the margin is not slack")
        XCTAssertNil(NoiseFloor.margin(passes: 1))
        XCTAssertGreaterThan(NoiseFloor.margin(passes: 2)!, NoiseFloor.margin(passes: 3)!, "fewer repeats, wider bound")
        XCTAssertEqual(NoiseFloor.margin(passes: 50), NoiseFloor.margin(passes: 8), "beyond the table: its last (most demanding) entry")
    }

    func testBaselineJudgesEachRowAgainstItsOwnNoise() throws {
        // anon-private moves 3 % with 2 % noise per pass; memfd is 2× slower with 3 % noise; thp is 1.75× slower
        // but its passes spread by 40 % in the baseline: its own noise hides that (limit 1.4^2.49 − 1 = 131 %).
        let base = Self.passRun([Self.row(map: [100, 102, 101, 100]), Self.row("memfd", map: [100, 103, 101, 102]),
                                 Self.row("thp", size: 2 << 20, map: [100, 140, 110, 120])])
        let cur = Self.passRun([Self.row(map: [103, 104, 103, 105]), Self.row("memfd", map: [200, 204, 202, 199]),
                                Self.row("thp", size: 2 << 20, map: [200, 210, 205, 200])], label: "debian:6.1 again")
        let c = BenchComparison.compare(baseline: base, current: cur)
        let flags = Dictionary(uniqueKeysWithValues: c.kinds.map { ($0.kind, $0.flag) })
        XCTAssertEqual(flags, ["anon-private": .same, "memfd": .slower, "thp": .same])
        let anon = try XCTUnwrap(c.rows.first { $0.kind == "anon-private" })
        XCTAssertEqual(try XCTUnwrap(anon.mapFloor), 0.02, accuracy: 1e-9, "the larger of the two runs' own spreads (2 % and 105/103)")
        XCTAssertEqual(try XCTUnwrap(anon.mapLimit), BenchComparison.minimumLimit, "1.02^2.49 − 1 = 5 % is below the least limit")
        let thp = try XCTUnwrap(c.rows.first { $0.kind == "thp" })
        XCTAssertEqual(try XCTUnwrap(thp.mapLimit), exp(2.49 * log(1.4)) - 1, accuracy: 1e-9, "a noisy row: its own bound")
        XCTAssertTrue(c.thresholdSource.hasPrefix("its own noise: beyond (1 + floor)^2.49 − 1, floor = the larger of the two runs' largest change between two passes of that row and call (4 passes each"),
                      c.thresholdSource)
        XCTAssertTrue(BenchText.comparison(c).contains("SLOWER"))
        // The same 2× slower memfd row against an unchanged run of it: flagged only in the slowed one.
        let unchanged = Self.passRun([Self.row(map: [101, 100, 102, 100]), Self.row("memfd", map: [101, 102, 100, 103]),
                                      Self.row("thp", size: 2 << 20, map: [130, 100, 120, 110])], label: "debian:6.1 unchanged")
        XCTAssertTrue(BenchComparison.compare(baseline: base, current: unchanged).slowerKinds.isEmpty)
        // With two passes the margin is 56: the same 2× is inside the bound, as it must be with so few repeats.
        let two = BenchComparison.compare(baseline: Self.passRun([Self.row("memfd", map: [100, 103])]),
                                          current: Self.passRun([Self.row("memfd", map: [200, 204])]))
        XCTAssertTrue(two.slowerKinds.isEmpty)
    }

    // MARK: - The host's drift between runs (yardsticks)

    /// One sample per stage (each its own `at`), unless `at` says otherwise.
    static func sticks(memory: [UInt64], cpu: [UInt64], at: [String]? = nil) -> [Yardstick] {
        zip(memory, cpu).enumerated().map { i, mc in Yardstick(at: at?[i] ?? "stage \(i)", writeNanos: mc.0, cpuNanos: mc.1) }
    }

    func testOneSlowSampleInAStageDoesNotWidenTheSpread() throws {
        // Run E's first boot: 124 ms once among 40-44 ms (the rest of its stage 43-44).
        let at = ["start", "start", "start", "end", "end", "end"]
        let e = Self.sticks(memory: [124, 43, 44, 42, 41, 41], cpu: [6, 6, 9, 6, 6, 6], at: at)
        let d = try XCTUnwrap(HostDrift(baseline: e, current: e))
        XCTAssertEqual(d.writeFloor, 44.0 / 41 - 1, accuracy: 1e-9, "stage medians 44 and 41")
        XCTAssertEqual(d.cpuFloor, 0)
        XCTAssertEqual(d.write, 1)
    }

    func testDriftWithinTheYardsticksOwnSpreadChangesNothing() throws {
        let d = try XCTUnwrap(HostDrift(baseline: Self.sticks(memory: [100, 104, 102], cpu: [50, 50, 51]),
                                        current: Self.sticks(memory: [103, 101, 105], cpu: [51, 50, 50])))
        XCTAssertFalse(d.moved)
        XCTAssertEqual(d.writeFloor, 0.04, accuracy: 1e-9, "the larger spread: 104/100 and 105/101")
        XCTAssertEqual(HostDrift.flag(change: 0.3, limit: 0.15, drift: d), .slower)
        XCTAssertEqual(HostDrift.flag(change: -0.3, limit: 0.15, drift: d), .faster)
        XCTAssertEqual(HostDrift.flag(change: 0.1, limit: 0.15, drift: d), .same)
        XCTAssertNil(HostDrift(baseline: [], current: Self.sticks(memory: [1], cpu: [1])), "no yardstick in a run: no drift")
    }

    func testAHostThatMovedWidensOnlyTheSideItMovedTo() throws {
        // The current run's host wrote memory 1.4× slower; the CPU loop did not move.
        let d = try XCTUnwrap(HostDrift(baseline: Self.sticks(memory: [100, 102, 101], cpu: [50, 50, 50]),
                                        current: Self.sticks(memory: [140, 141, 143], cpu: [50, 51, 50])))
        XCTAssertTrue(d.moved)
        XCTAssertEqual(d.slower, 141.0 / 101, accuracy: 1e-9)
        XCTAssertEqual(d.faster, 1)
        XCTAssertEqual(HostDrift.flag(change: 0.5, limit: 0.15, drift: d), .same, "1.5 < 1.15 × 1.396")
        XCTAssertEqual(HostDrift.flag(change: 0.7, limit: 0.15, drift: d), .slower, "beyond the host's drift too")
        XCTAssertEqual(HostDrift.flag(change: -0.2, limit: 0.15, drift: d), .faster, "faster while the host got slower stays a finding")
    }

    func testBaselineAllowsForTheHostsDrift() throws {
        // A row 37 % faster in a run whose host wrote memory 1.45× faster: the host, not the kernel.
        var base = Self.passRun([Self.row(size: 1 << 30, map: [80, 79, 81, 77])])
        var cur = Self.passRun([Self.row(size: 1 << 30, map: [50, 51, 50, 49])], label: "debian:6.1 again")
        XCTAssertEqual(BenchComparison.compare(baseline: base, current: cur).kinds.first?.flag, .faster, "without yardsticks it is flagged")
        base.yardsticks = Self.sticks(memory: [145, 146, 150, 144], cpu: [50, 50, 51, 50])
        cur.yardsticks = Self.sticks(memory: [100, 101, 100, 103], cpu: [50, 51, 50, 50])
        let c = BenchComparison.compare(baseline: base, current: cur)
        XCTAssertEqual(c.kinds.first?.flag, .same)
        XCTAssertTrue(c.thresholdSource.contains("widened by the host's own drift"), c.thresholdSource)
        XCTAssertTrue(BenchText.comparison(c).contains("host: the yardstick moved memory writes ×0.69"), BenchText.comparison(c))
        // Yardsticks travel with the run through the stream and across boots.
        var sent = cur
        sent.yardsticks = nil
        let stream = BenchEvent.header(sent, planned: 1).line + cur.yardsticks!.map { BenchEvent.yardstick($0).line }.joined()
        XCTAssertEqual(BenchStreamContents(text: stream).run?.yardsticks, cur.yardsticks)
        XCTAssertEqual(BenchRun.acrossBoots([base, cur])?.yardsticks?.count, 8)
        XCTAssertNil(c.tools, "one build measured both")
        // Another kernel: the same yardsticks are reported, not allowed for.
        cur.kernelRelease = "7.3.4+deb13-amd64"
        let other = BenchComparison.compare(baseline: base, current: cur)
        XCTAssertEqual(other.kinds.first?.flag, .faster)
        XCTAssertEqual(other.hostDrift?.sameKernel, false)
        XCTAssertTrue(BenchText.comparison(other).contains("different kernels, so it is not allowed for"))
        cur.kernelRelease = base.kernelRelease
        cur.tool = "vfio-exerciser 0.1.0 (git 1a2b3c4d5e6f)"
        XCTAssertTrue(BenchText.comparison(BenchComparison.compare(baseline: base, current: cur)).contains("measured by different builds: vfio-exerciser 0.1.0 → vfio-exerciser 0.1.0 (git 1a2b3c4d5e6f)"))
    }

    func testTheYardstickMeasuresSomething() throws {
        let y = try XCTUnwrap(Yardstick.measure(at: "start"))
        XCTAssertGreaterThan(y.writeNanos, 0)
        XCTAssertGreaterThan(y.cpuNanos, 0)
        XCTAssertEqual(y.at, "start")
    }

    func testStreamOfPassesIsMergedPerRow() throws {
        var r = BenchTests.run([])
        r.points = []
        let pts = Self.row(map: [100, 120]) + Self.row("memfd", map: [50, 50])
        let text = BenchEvent.header(r, planned: 4).line + pts.map { BenchEvent.point($0).line }.joined()
        let s = BenchStreamContents(text: text)
        XCTAssertEqual(s.run?.points.count, 2)
        XCTAssertEqual(try XCTUnwrap(s.run?.points.first?.mapFloor), 0.2, accuracy: 1e-9)
    }

    // MARK: - CPU brackets

    func testBracketsSplitTheThreadsCPUIntoKernelAndTool() throws {
        // 10 ioctls with 1000 ns inside their brackets in all; an empty bracket 30 ns inside, 80 ns in all.
        let b = CPUBrackets(insideNanos: 1000, calls: 10, emptyInside: 30, emptyWhole: 80)
        XCTAssertEqual(b.kernelNanos, 1000 - 10 * 30, accuracy: 1e-9)
        XCTAssertEqual(b.toolNanos(threadCPUNanos: 2000), 2000 - 700 - 10 * 80, accuracy: 1e-9)
        // Two blocks calibrated differently: the sum's split is the sum of their splits.
        let c = CPUBrackets(insideNanos: 5000, calls: 30, emptyInside: 50, emptyWhole: 120)
        let sum = b + c
        XCTAssertEqual(sum.calls, 40)
        XCTAssertEqual(sum.calibrations, 2)
        XCTAssertEqual(sum.kernelNanos, b.kernelNanos + c.kernelNanos, accuracy: 1e-9)
        XCTAssertEqual(sum.toolNanos(threadCPUNanos: 2000 + 9000), b.toolNanos(threadCPUNanos: 2000) + c.toolNanos(threadCPUNanos: 9000), accuracy: 1e-9)
        // Per call on a point: a guest's pair is one call per slot each way, so the bracket count divides.
        var p = BenchTests.point("guest-anon-4K", map: [10, 10], unmap: [10, 10])
        p.cpuMicros = 20
        p.brackets = CPUBrackets(insideNanos: 12_000, calls: 8, emptyInside: 100, emptyWhole: 400)
        XCTAssertEqual(try XCTUnwrap(p.kernelPerCall), (12 - 0.8) / 8, accuracy: 1e-9)
        XCTAssertEqual(try XCTUnwrap(p.toolPerCall), (20 - 11.2 - 3.2) / 8, accuracy: 1e-9)
        p.brackets = nil
        XCTAssertNil(p.kernelPerCall, "without brackets no split, rather than a guessed one")
    }

    // MARK: - Guest layout and growth

    func testQ35LayoutSplitsRAMAroundTheVGAHoleAndThePCIHole() {
        typealias S = GuestLayout.Slot
        XCTAssertEqual(GuestLayout.q35(ram: 4 << 30), [S(gpa: 0, size: 0xA_0000, hostOffset: 0),
                                                       S(gpa: 0x10_0000, size: (2 << 30) - 0x10_0000, hostOffset: 0x10_0000),
                                                       S(gpa: 4 << 30, size: 2 << 30, hostOffset: 2 << 30)], "≥ 2.75G: 2G below 4G")
        XCTAssertEqual(GuestLayout.q35(ram: 2 << 30).map(\.gpa), [0, 0x10_0000], "below 2.75G all RAM is below the hole")
        XCTAssertEqual(GuestLayout.q35(ram: 0xC000_0000).last, S(gpa: 4 << 30, size: 1 << 30, hostOffset: 2 << 30))
        let capped = GuestLayout.q35(ram: 1 << 30, maxBelow4G: 512 << 20)
        XCTAssertEqual(capped.last, S(gpa: 4 << 30, size: 512 << 20, hostOffset: 512 << 20), "max-ram-below-4g moves the rest above 4G")
        XCTAssertEqual(capped.map(\.size).reduce(0, +), (1 << 30) - 0x6_0000, "only [640K, 1M) is left out")
    }

    func testLinearFitGivesTheGrowthPerUnit() throws {
        let f = try XCTUnwrap(BenchMath.linearFit([0.0625, 0.125, 0.5, 1], [3.125, 3.25, 4, 5]))
        XCTAssertEqual(f.slope, 2, accuracy: 1e-9)
        XCTAssertEqual(f.intercept, 3, accuracy: 1e-9)
        XCTAssertNil(BenchMath.linearFit([1, 1], [2, 3]), "one size: no growth")
        XCTAssertEqual(BenchOptions.guestSizes(for: "guest-hugetlb-1G", from: BenchOptions.defaultGuestSizes), [1 << 30])
    }

    func testStreamCarriesTheComparisonBlocks() throws {
        var r = BenchTests.run([])
        r.points = []
        let blocks = Self.swiftBlocks(size: 4096, medians: [100, 110])
        let text = BenchEvent.header(r, planned: 2).line + blocks.map { BenchEvent.round($0).line }.joined()
        let s = BenchStreamContents(text: text)
        XCTAssertEqual(s.run?.rounds, blocks)
        XCTAssertEqual(s.pointCount, 2, "blocks count towards the progress")
        XCTAssertEqual(try XCTUnwrap(s.run?.noise).floor, 0.1, accuracy: 1e-9)
    }
}

/// bench --boots: rows measured in several boots are one row whose floor spans the boots.
final class BenchBootsTests: XCTestCase {
    func row(_ medians: [UInt64], boots: Int? = nil) -> BenchPoint {
        var p = BenchPoint(backend: "type1", kind: "bar", size: 4096, mapNanos: medians, unmapNanos: medians)
        p.passes = medians.map { PassSummary(mapP50: $0, unmapP50: $0, n: 8) }
        p.boots = boots
        return p
    }

    func run(_ points: [BenchPoint], boots: Int? = nil) -> BenchRun {
        var r = BenchRun(kernelRelease: "6.1.0-50-amd64", device: "vm", started: "now",
                         settings: BenchSettings(backends: ["type1"], kinds: ["bar"], sizes: [4096], repetitions: 8, warmup: 1,
                                                 minRepetitions: 2, budgetSeconds: 0.5, iova: 0x100000, passes: 4),
                         points: points)
        r.boots = boots
        return r
    }

    func testBootsConcatenateEachRowsPasses() throws {
        let a = run([row([7000, 7100, 6900, 7050])]), b = run([row([10500, 10200, 11000, 9900])])
        let m = try XCTUnwrap(BenchRun.acrossBoots([a, b]))
        XCTAssertEqual(m.boots, 2)
        let p = try XCTUnwrap(m.points.first)
        XCTAssertEqual(p.passes?.count, 8)
        XCTAssertEqual(p.passesPerBoot, 4, "the margin is set for the passes of one boot")
        XCTAssertEqual(p.mapNanos.count, 8)
        XCTAssertGreaterThan(try XCTUnwrap(p.mapFloor), 0.5, "the boot-to-boot jump is in the floor")
    }

    /// The fourth unchanged run's case: one boot whose row sat 45 % higher in every pass. With two
    /// boots per run that state is in the floor and the row is not flagged; a 2x slower row on
    /// both boots still is.
    func testABootLongStateIsNotAChangeButTwiceSlowerIs() throws {
        let base = try XCTUnwrap(BenchRun.acrossBoots([run([row([7000, 7100, 6900, 7050])]), run([row([10500, 10200, 11000, 9900])])]))
        let same = try XCTUnwrap(BenchRun.acrossBoots([run([row([7050, 6950, 7000, 7100])]), run([row([7000, 7150, 6900, 7000])])]))
        XCTAssertEqual(BenchComparison.compare(baseline: base, current: same).rows.first?.flag, .same)
        let oneBoot = BenchComparison.compare(baseline: run([row([10500, 10200, 11000, 9900])]), current: run([row([7050, 6950, 7000, 7100])]))
        XCTAssertEqual(oneBoot.rows.first?.flag, .faster, "one boot each: the boot-long state looks like a change")
        let slow = try XCTUnwrap(BenchRun.acrossBoots([run([row([14000, 14200, 13800, 14100])]), run([row([14100, 13900, 14000, 14050])])]))
        let same2 = try XCTUnwrap(BenchRun.acrossBoots([run([row([7050, 6950, 7000, 7100])]), run([row([7000, 7150, 6900, 7000])])]))
        XCTAssertEqual(BenchComparison.compare(baseline: same2, current: slow).rows.first?.flag, .slower)
    }

    func testAnErrorInAnyBootIsTheRowsError() throws {
        var bad = row([1])
        bad.status = .error
        bad.reason = "EFAULT"
        let m = try XCTUnwrap(BenchRun.acrossBoots([run([row([7000, 7100])]), run([bad])]))
        XCTAssertEqual(m.points.first?.status, .error)
    }
}
