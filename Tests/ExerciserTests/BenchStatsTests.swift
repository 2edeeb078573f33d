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

    func testBaselineFlagsOnlyBeyondTheLargerMeasuredFloor() {
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
        XCTAssertTrue(c.thresholdSource.hasPrefix("the measured noise floor"), c.thresholdSource)
        XCTAssertTrue(BenchText.comparison(c).contains("flagged only beyond the measured noise floor"))
        let raised = BenchComparison.compare(baseline: base, current: cur, threshold: 0.2)
        XCTAssertTrue(raised.slowerKinds.isEmpty, "--threshold raises the bar above the measured floor")
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
