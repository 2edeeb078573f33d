import XCTest
import Foundation
@testable import Exerciser

/// The bench's pure parts: statistics, the tool-overhead ratio, the baseline comparison, the
/// serial stream, the saved file and the plot. The measuring itself runs in the VM.
final class BenchTests: XCTestCase {

    static let settings = BenchSettings(backends: ["type1v2"], kinds: ["anon-private"], sizes: [4096, 1 << 20], repetitions: 5,
                                        warmup: 1, minRepetitions: 2, budgetSeconds: 1, iova: 1 << 32)

    static func point(_ kind: String = "anon-private", backend: String = "type1v2", source: String = "swift", size: UInt64 = 4096,
                      map: [UInt64], unmap: [UInt64]? = nil, status: BenchPoint.Status = .ok) -> BenchPoint {
        BenchPoint(backend: backend, kind: kind, source: source, size: size, status: status, mapNanos: map, unmapNanos: unmap ?? map)
    }

    static func run(_ points: [BenchPoint], label: String = "debian:6.1", c: [BenchPoint] = []) -> BenchRun {
        BenchRun(kernelRelease: "6.1.0-test", label: label, device: "0000:00:03.0", started: "2026-12-01T00:00:00Z",
                 settings: settings, points: points, cHelper: c.isEmpty ? nil : CHelperResult(commands: ["map_bench"], points: c))
    }

    // MARK: - Statistics

    func testNearestRankPercentiles() {
        let s: [UInt64] = Array(1...10)
        XCTAssertEqual(BenchMath.percentile(s, 50), 5)
        XCTAssertEqual(BenchMath.percentile(s, 90), 9)
        XCTAssertEqual(BenchMath.percentile(s, 99), 10, "p99 of fewer than 100 samples is the maximum")
        XCTAssertEqual(BenchMath.percentile(s, 0), 1)
        XCTAssertEqual(BenchMath.percentile([7], 50), 7)
        XCTAssertNil(BenchMath.percentile([], 50))
    }

    func testLatencyStatsFromUnsortedSamples() throws {
        let st = try XCTUnwrap(LatencyStats(samples: [30, 10, 20, 1000, 40]))
        XCTAssertEqual([st.count, Int(st.min), Int(st.p50), Int(st.p99), Int(st.max)], [5, 10, 30, 1000, 1000])
        XCTAssertEqual(st.mean, 220, accuracy: 1e-9)
        XCTAssertNil(LatencyStats(samples: []))
    }

    func testThroughputIsSizeOverMedianCall() throws {
        // 1 GiB in 0.5 s at the median: 2 GiB/s, whatever the outliers.
        let p = Self.point(size: 1 << 30, map: [500_000_000, 400_000_000, 9_000_000_000], unmap: [250_000_000])
        XCTAssertEqual(try XCTUnwrap(p.mapGiBps), 2, accuracy: 1e-9)
        XCTAssertEqual(try XCTUnwrap(p.unmapGiBps), 4, accuracy: 1e-9)
        XCTAssertNil(BenchMath.gibPerSecond(bytes: 4096, nanos: 0))
    }

    // MARK: - The tool's own cost

    static func block(_ side: BenchSide, round: Int, size: UInt64 = 4096, backend: String = "type1v2", map: [UInt64], unmap: [UInt64]? = nil,
                      user: Double? = nil, system: Double? = nil, cpu: Double? = nil, brackets: CPUBrackets? = nil, thp: String? = "0",
                      status: BenchPoint.Status = .ok) -> RoundSample {
        RoundSample(backend: backend, size: size, round: round, side: side, order: 0, status: status, mapNanos: map, unmapNanos: unmap ?? map,
                    userMicros: user, systemMicros: system, cpuMicros: cpu, brackets: brackets, anonHugeKB: thp)
    }

    /// `calls` brackets holding `inside` µs in all; an empty bracket 0.5 µs inside, 2 µs in all.
    static func brackets(inside: Double, calls: Int) -> CPUBrackets {
        CPUBrackets(insideNanos: UInt64(inside * 1000), calls: calls, emptyInside: 500, emptyWhole: 2000)
    }

    func testComparisonPairsSwiftAndCBlocksOfTheSameRound() throws {
        // 4 calls per block (3 maps + 1 unmap), brackets 0.5 µs inside and 2 µs in all: sys = inside − 4 × 0.5,
        // user = cpu − sys − 4 × 2. Round 0: Swift sys 400, user 480 − 400 − 8 = 72; C sys 400, user 440 − 400 − 8 = 32.
        // Round 1: Swift sys 200, user 248 − 200 − 8 = 40; C sys 200, user 240 − 200 − 8 = 32.
        let samples = [
            Self.block(.swift, round: 0, map: [110, 100, 120], unmap: [50], user: 4000, system: 0, cpu: 480, brackets: Self.brackets(inside: 402, calls: 4)),
            Self.block(.c, round: 0, map: [100, 90, 110], unmap: [50], cpu: 440, brackets: Self.brackets(inside: 402, calls: 4)),
            Self.block(.c, round: 1, map: [200, 200, 200], unmap: [100], cpu: 240, brackets: Self.brackets(inside: 202, calls: 4), thp: "2048"),
            Self.block(.swift, round: 1, map: [220, 220, 220], unmap: [100], cpu: 248, brackets: Self.brackets(inside: 202, calls: 4)),
            Self.block(.swift, round: 2, map: [999], unmap: [999], cpu: 999),  // its C block failed: not paired
            Self.block(.c, round: 2, map: [], status: .error),
        ]
        let rows = ComparisonRow.rows(samples)
        XCTAssertEqual(rows.count, 1)
        let r = rows[0]
        XCTAssertEqual(r.rounds, 2)
        // Medians 110/100 and 220/200: every round says 1.1, so the interval is that point.
        let m = try XCTUnwrap(r.map)
        for v in [m.estimate, m.low, m.high] { XCTAssertEqual(v, 1.1, accuracy: 1e-9) }
        XCTAssertEqual(r.mapVerdict, .swiftSlower)
        XCTAssertEqual(try XCTUnwrap(r.unmap).estimate, 1, accuracy: 1e-9)
        XCTAssertEqual(r.unmapVerdict, .notDistinguishable)
        // User added per call: round 0 (72 − 32) / 4 = 10 µs, round 1 (40 − 32) / 4 = 2 µs; the getrusage
        // figures (4000 µs of "user" in round 0) play no part.
        let u = try XCTUnwrap(r.userOverhead)
        XCTAssertEqual(u.estimate, 6, accuracy: 1e-9)
        XCTAssertTrue(u.low >= 2 && u.high <= 10, "\(u)")
        XCTAssertEqual(try XCTUnwrap(r.systemOverhead).estimate, 0, accuracy: 1e-9, "the same ioctl: the kernel's share is the same")
        XCTAssertEqual(try XCTUnwrap(r.cSystem), 600 / 8.0, accuracy: 1e-9, "per call over every C block")
        XCTAssertEqual(try XCTUnwrap(r.cUser), 64 / 8.0, accuracy: 1e-9)
        XCTAssertNil(r.swiftUser, "a Swift block without brackets: no per-call figure rather than a wrong one")
        // All CPU: (480 − 440) / 4 = 10 and (248 − 240) / 4 = 2 µs per call; the errored round is not paired.
        XCTAssertEqual(try XCTUnwrap(r.cpuOverhead).estimate, 6, accuracy: 1e-9)
        XCTAssertEqual(r.thpDiffer, 1)
    }

    func testOverheadTargetIsJudgedOnlyOnIntervalsClearOfIt() throws {
        func row(_ map: Interval, _ unmap: Interval) -> ComparisonRow {
            ComparisonRow(backend: "type1", size: 4096, rounds: 10, map: map, unmap: unmap, thpDiffer: 0)
        }
        let straddles = Interval(estimate: 1.03, low: 0.99, high: 1.08, n: 10)
        let inside = Interval(estimate: 1.01, low: 0.98, high: 1.04, n: 10)
        let over = Interval(estimate: 1.2, low: 1.1, high: 1.3, n: 10)
        let s1 = try XCTUnwrap(OverheadSummary([row(inside, straddles)]))
        XCTAssertEqual([s1.within, s1.over, s1.undecided, s1.notDistinguishable], [1, 0, 1, 2])
        XCTAssertEqual(s1.verdict, .undecided, "one interval straddles 1.05: no verdict, whatever its estimate")
        XCTAssertEqual(try XCTUnwrap(OverheadSummary([row(inside, inside)])).verdict, .met)
        XCTAssertEqual(try XCTUnwrap(OverheadSummary([row(over, straddles)])).verdict, .missed)
        XCTAssertEqual(try XCTUnwrap(OverheadSummary([row(over, straddles)])).widestAt, "type1 4K map")
        XCTAssertNil(OverheadSummary([]))
    }

    func testCHelperOutputCarriesItsCPUTime() throws {
        let json = #"{"schema":"vfio-exerciser-map-bench/1","kernel":"6.1","points":[{"backend":"type1","kind":"anon-private","size":4096,"status":"ok","vaddr_offset":0,"anon_huge_kb":0,"warmup":2,"user_us":12,"sys_us":480,"cpu_us":500.5,"bracket_ns":482000,"bracket_calls":4,"empty_inside_median_ns":500,"empty_whole_median_ns":2000,"map_ns":[5,6],"unmap_ns":[3,4]}]}"#
        let p = try XCTUnwrap(BenchRunner.parseCHelper(Data(json.utf8)).first)
        XCTAssertEqual(p.userMicros, 12)
        // Empty bracket 500 ns inside, 2000 ns in all: sys (482 − 4 × 0.5) / 4 = 120, user (500.5 − 480 − 4 × 2) / 4 = 3.125.
        XCTAssertEqual(try XCTUnwrap(p.kernelPerCall), 120, accuracy: 1e-9)
        XCTAssertEqual(try XCTUnwrap(p.toolPerCall), 3.125, accuracy: 1e-9)
        XCTAssertEqual(p.cpuPerCall ?? 0, 125.125, accuracy: 1e-9)
        XCTAssertEqual(p.rusageSystemPerCall, 120, "getrusage's 480 µs kept as the cross-check")
    }

    // MARK: - Baseline comparison

    func testComparisonFlagsMediansBeyondTheThresholdOnly() {
        let base = Self.run([Self.point(map: [100], unmap: [100]), Self.point("memfd", map: [100], unmap: [100]),
                             Self.point("thp", size: 2 << 20, map: [100], unmap: [100]),
                             Self.point("bar", map: [100], unmap: [100])])
        let cur = Self.run([Self.point(map: [121], unmap: [100]),          // +21 %: slower
                            Self.point("memfd", map: [120], unmap: [84]),  // ×1.2 is not beyond; ÷1.19 neither
                            Self.point("thp", size: 2 << 20, map: [100], unmap: [70]),  // −30 %: faster
                            Self.point("hugetlb-2M", size: 2 << 20, map: [5], unmap: [5])], label: "debian:7.3")
        let c = BenchComparison.compare(baseline: base, current: cur)
        XCTAssertEqual(c.thresholdSource, "no repeats in either run: the fixed 20 %")
        let flags = Dictionary(uniqueKeysWithValues: c.kinds.map { ($0.kind, $0.flag) })
        XCTAssertEqual(flags, ["anon-private": .slower, "memfd": .same, "thp": .faster, "bar": .unmatched, "hugetlb-2M": .unmatched])
        XCTAssertEqual(c.slowerKinds, ["anon-private"])
        let anon = c.kinds.first { $0.kind == "anon-private" }
        XCTAssertEqual(anon?.largestAt, "type1v2 4K map")
        XCTAssertEqual(anon?.largestChange ?? 0, 0.21, accuracy: 1e-9)
        XCTAssertEqual(c.baseline, "debian:6.1 (6.1.0-test)")
        XCTAssertEqual(c.current, "debian:7.3 (6.1.0-test)")
    }

    func testComparisonIgnoresPointsThatDidNotMeasure() {
        let base = Self.run([Self.point(map: [100])])
        let cur = Self.run([Self.point(map: [900], status: .error)])
        let c = BenchComparison.compare(baseline: base, current: cur, threshold: 0.2)
        XCTAssertEqual(c.kinds.map(\.flag), [.unmatched], "an errored point is no evidence of a slowdown")
        XCTAssertTrue(c.slowerKinds.isEmpty)
    }

    // MARK: - Stream and file

    func testStreamRoundTripKeepsPointsOfATruncatedRun() throws {
        var r = Self.run([])
        r.points = []
        let p1 = Self.point(map: [10, 20, 30]), p2 = Self.point("memfd", map: [40])
        let text = "boot noise\n" + BenchEvent.header(r, planned: 3).line + BenchEvent.point(p1).line + "console noise VFXB {broken\n"
            + BenchEvent.point(p2).line + String(BenchEvent.point(p1).line.prefix(30))
        let s = BenchStreamContents(text: text)
        XCTAssertEqual(s.planned, 3)
        XCTAssertEqual(s.run?.points, [p1, p2])
        XCTAssertFalse(s.finished, "no end marker: the harness reports the run as cut short")
        let done = BenchStreamContents(text: text + "\n" + BenchEvent.end(seconds: 4.5).line)
        XCTAssertTrue(done.finished)
        XCTAssertEqual(done.run?.seconds, 4.5)
    }

    func testSavedRunDecodesAndOtherSchemasAreRefused() throws {
        let r = Self.run([Self.point(map: [1, 2, 3])], c: [Self.point(source: "c", map: [1, 2])])
        let back = try BenchRun.decode(try r.encoded())
        XCTAssertEqual(back, r)
        var other = try XCTUnwrap(JSONSerialization.jsonObject(with: try r.encoded()) as? [String: Any])
        other["schema"] = "vfio-exerciser-bench/2"
        XCTAssertThrowsError(try BenchRun.decode(try JSONSerialization.data(withJSONObject: other), from: "b.json")) { e in
            XCTAssertEqual("\(e)", "b.json: schema vfio-exerciser-bench/2, this tool reads vfio-exerciser-bench/1")
        }
        XCTAssertThrowsError(try BenchRun.decode(Data("[1]".utf8), from: "b.json")) { e in
            XCTAssertEqual("\(e)", "b.json: not a JSON object")
        }
        XCTAssertThrowsError(try BenchRun.decode(Data("{\"points\": []}".utf8), from: "m.json")) { e in
            XCTAssertTrue("\(e)".hasPrefix("m.json: not a vfio-exerciser bench file"), "\(e)")
        }
    }

    // MARK: - Sizes and plot

    func testSizesPerKind() {
        let all: [UInt64] = [4 << 10, 2 << 20, 16 << 20, 1 << 30]
        XCTAssertEqual(BenchOptions.sizes(for: .hugetlb1G, from: all, barSize: nil), [1 << 30])
        XCTAssertEqual(BenchOptions.sizes(for: .thp, from: all, barSize: nil), [2 << 20, 16 << 20, 1 << 30])
        XCTAssertEqual(BenchOptions.sizes(for: .bar, from: all, barSize: 1 << 20), [4 << 10])
        XCTAssertEqual(BenchOptions.sizes(for: .bar, from: [2 << 20], barSize: 1 << 20), [1 << 20], "a BAR smaller than every size: the whole BAR")
        XCTAssertEqual(BenchOptions.sizes(for: .anonPrivate, from: all + all, barSize: nil), all)
        XCTAssertFalse(BenchOptions.benchable(.sizeZero))
        XCTAssertFalse(BenchOptions.benchable(.barPlusAnon))
        XCTAssertTrue(BenchOptions.benchable(.hugetlb2M))
    }

    func testPlotHasOneSeriesPerBackendAndKindPlusTheCHelper() {
        var r = Self.run([Self.point(map: [100]), Self.point(size: 1 << 20, map: [200]), Self.point("memfd", map: [100]),
                          Self.point("bar", map: [1], status: .skip), Self.point("guest-thp", size: 64 << 20, map: [1000])],
                         c: [Self.point(source: "c", map: [90])])
        r.rounds = [Self.block(.c, round: 0, map: [90]), Self.block(.c, round: 1, map: [80]), Self.block(.swift, round: 0, map: [95])]
        r.recompute()
        XCTAssertEqual(r.cHelper?.points.map(\.mapNanos), [[90, 80]], "the C curve pools the C blocks")
        let s = BenchPlot.series(r)
        XCTAssertEqual(s.map(\.label), ["anon-private · type1v2", "memfd · type1v2", "guest-thp · type1v2", "anon-private · type1v2 · C helper"])
        XCTAssertEqual(s[0].points.map(\.size), [4096, 1 << 20])
        let svg = BenchPlot.svg(r)
        XCTAssertTrue(svg.hasPrefix("<svg") || svg.hasPrefix("<?xml"), String(svg.prefix(40)))
        XCTAssertEqual(svg.components(separatedBy: "<g class=\"series\">").count - 1, 2 * s.count, "each series in the map and the unmap panel")
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 2, "a line only where a series has two sizes or more")
        XCTAssertTrue(svg.contains("memfd · type1v2"))
    }
}

/// Bytes verified per engine, summed over a run's cases that had a data check, and shown.
final class EngineThroughputTests: XCTestCase {
    func testSumsPerEngineAndSkipsCasesWithoutACheck() {
        func rec(_ id: String, _ engine: String?, _ bytes: UInt64?, _ ms: UInt64?) -> CaseResult {
            var r = CaseRecord(id: id, backend: "type1v2", kind: "anon-private", phase: .device, size: 0, flags: [], iova: 0, outcome: .ok)
            r.dataEngine = engine
            r.dataBytes = bytes
            r.dataNanos = ms.map { $0 * 1_000_000 }
            return CaseResult(record: r, verdict: Verdict(.pass, "ok"))
        }
        let report = RunReport(header: RunHeader(tool: "t", kernelRelease: "k", device: "d", plan: []),
                               results: [rec("a", "nvme", 1 << 30, 1000), rec("b", "nvme", 1 << 20, 24), rec("c", "edu", 12285, 200),
                                         rec("d", nil, nil, nil), rec("e", "edu", 0, 100)])
        let t = EngineThroughput.from(report)
        XCTAssertEqual(t.map(\.engine), ["edu", "nvme"])
        XCTAssertEqual(t[1].bytes, (1 << 30) + (1 << 20))
        XCTAssertEqual(t[1].cases, 2)
        XCTAssertEqual(t[1].seconds, 1.024, accuracy: 1e-9)
        XCTAssertEqual(t[0].bytesPerSecond, 12285 / 0.3, accuracy: 1e-6)
        var run = BenchTests.run([])
        run.matrix = MatrixTiming(10, report)
        XCTAssertTrue(BenchText.report(run).contains("data checks by nvme: 1025.0 MiB verified in 1.02 s over 2 cases"), BenchText.report(run))
    }
}
