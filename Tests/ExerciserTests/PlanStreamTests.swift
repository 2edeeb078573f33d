import XCTest
import Foundation
import Yams
@testable import Exerciser
@testable import VFIO
import CVFIO

/// Planning (matrix expansion, IOVA allocation), the result stream and the judging of lost cases.
final class PlanStreamTests: XCTestCase {

    // MARK: - Planner

    static func template(_ kind: CaseKind, size: UInt64? = nil, flags: [String]? = nil) -> CaseTemplate {
        CaseTemplate(kind: kind, size: size ?? kind.defaultSize, flags: flags ?? kind.defaultFlags, phases: kind.phases)
    }

    /// Backends deliberately not in enum order, so "matrix order" is observable.
    static let matrix = Matrix(backends: [.type1v2, .type1], cases: [
        template(.anonPrivate),
        template(.sizeZero, size: 0),
        template(.bar),
        template(.hugetlb2M),
        template(.barPlusAnon),
        template(.unmapAll),
    ])

    func testPlanExpandsBackendsPhasesKindsAndBARs() {
        let plan = Planner.plan(Self.matrix, backends: nil, kinds: nil, bars: ["BAR0", "BAR2"])
        var expected: [String] = []
        for b in ["type1v2", "type1"] {
            expected += ["\(b)/size-zero@pre-device", "\(b)/unmap-all@pre-device"]
            expected += ["\(b)/anon-private", "\(b)/size-zero@device", "\(b)/bar/BAR0", "\(b)/bar/BAR2",
                         "\(b)/hugetlb-2M", "\(b)/bar-plus-anon", "\(b)/unmap-all@device"]
        }
        XCTAssertEqual(plan.map(\.id), expected)
        // backends × (2 edges × 2 phases + 2 regions + 2 BARs + bar-plus-anon once)
        XCTAssertEqual(plan.count, 2 * (2 * 2 + 2 + 2 + 1))
        XCTAssertEqual(Set(plan.map(\.id)).count, plan.count, "case ids must be unique: lost cases are found by id")
    }

    func testMdevBackendsRunMemoryKindsOnly() {
        let m = Matrix(backends: [.mdevMap, .type1], cases: Self.matrix.cases)
        let plan = Planner.plan(m, backends: nil, kinds: nil, bars: ["BAR0"])
        XCTAssertEqual(plan.filter { $0.backend == .mdevMap }.map(\.id), ["mdev-map/anon-private", "mdev-map/hugetlb-2M"],
                       "no argument edges and no BARs on an mdev")
        XCTAssertEqual(plan.filter { $0.backend == .type1 }.count, 2 * 2 + 2 + 1 + 1)
    }

    func testMapFileKindsRunOnTheIommufdBackendOnly() {
        let m = Matrix(backends: [.type1v2, .iommufdCompatType1v2, .iommufd, .mdevPin],
                       cases: [Self.template(.memfdMapFile), Self.template(.memfd), Self.template(.peerBarDmabuf)])
        XCTAssertEqual(Planner.plan(m, backends: nil, kinds: nil, bars: []).map(\.id),
                       ["type1v2/memfd", "iommufd-compat-type1v2/memfd", "iommufd/memfd-map-file", "iommufd/memfd", "iommufd/peer-bar-dmabuf",
                        "mdev-pin/memfd"])
    }

    func testCaseBackendsNarrowWhereItRuns() throws {
        let yaml = """
        schema: 1
        backends: [type1, type1v2]
        cases:
          - kind: anon-private
          - kind: hugetlb-2M
            backends: [type1v2]
        """
        let m = try Matrix.parse(try XCTUnwrap(Yams.compose(yaml: yaml)), file: "m.yaml")
        XCTAssertEqual(Planner.plan(m, backends: nil, kinds: nil, bars: []).map(\.id),
                       ["type1/anon-private", "type1v2/anon-private", "type1v2/hugetlb-2M"])
        let bad = yaml.replacingOccurrences(of: "backends: [type1v2]", with: "backends: [iommufd]")
        XCTAssertThrowsError(try Matrix.parse(try XCTUnwrap(Yams.compose(yaml: bad)), file: "m.yaml")) { e in
            XCTAssertEqual("\(e)", "m.yaml:5: backend iommufd is not in the matrix's backends")
        }
    }

    func testPlanCarriesTemplateFields() {
        let plan = Planner.plan(Self.matrix, backends: [.type1], kinds: nil, bars: ["BAR0", "BAR2"])
        for c in plan {
            let t = Self.matrix.cases.first { $0.kind == c.kind }!
            XCTAssertEqual(c.size, t.size, c.id)
            XCTAssertEqual(c.flags, t.flags, c.id)
            XCTAssertEqual(c.backend, .type1, c.id)
        }
        XCTAssertEqual(plan.filter { $0.kind == .bar }.map(\.instance), ["BAR0", "BAR2"])
        XCTAssertEqual(plan.filter { $0.kind == .barPlusAnon }.map(\.instance), [nil], "bar-plus-anon is not expanded per BAR")
        XCTAssertTrue(plan.filter { $0.kind != .bar }.allSatisfy { $0.instance == nil })
        XCTAssertEqual(plan.first { $0.kind == .hugetlb2M }?.size, 2 << 20)
        XCTAssertEqual(plan.first { $0.kind == .sizeZero }?.size, 0)
    }

    func testEdgesInBothPhasesRegionsOnlyOnDevice() {
        let plan = Planner.plan(Self.matrix, backends: nil, kinds: nil, bars: ["BAR0"])
        for c in plan {
            if c.kind.isEdge {
                XCTAssertTrue(c.id.hasSuffix("@\(c.phase.rawValue)"), c.id)
            } else {
                XCTAssertEqual(c.phase, .device, "\(c.id): region kinds run with the device open")
                XCTAssertFalse(c.id.contains("@"), c.id)
            }
        }
        for b in [BackendKind.type1, .type1v2] {
            for k in [CaseKind.sizeZero, .unmapAll] {
                let ids = plan.filter { $0.backend == b && $0.kind == k }.map(\.id)
                XCTAssertEqual(ids, ["\(b.rawValue)/\(k.rawValue)@pre-device", "\(b.rawValue)/\(k.rawValue)@device"])
            }
        }
    }

    func testPlanOrderPreDeviceBeforeDevicePerBackend() {
        let plan = Planner.plan(Self.matrix, backends: nil, kinds: nil, bars: ["BAR0"])
        // Backends in matrix order, each contiguous.
        var seen: [BackendKind] = []
        for c in plan where seen.last != c.backend { seen.append(c.backend) }
        XCTAssertEqual(seen, [.type1v2, .type1])
        // Within a backend every pre-device case comes before every device case.
        for b in seen {
            let phases = plan.filter { $0.backend == b }.map(\.phase)
            guard let firstDevice = phases.firstIndex(of: .device) else { return XCTFail("no device cases for \(b)") }
            XCTAssertFalse(phases[firstDevice...].contains(.preDevice), "\(b): \(phases)")
            XCTAssertEqual(phases.filter { $0 == .preDevice }.count, 2)
        }
    }

    func testPlanFilters() {
        let onlyType1 = Planner.plan(Self.matrix, backends: [.type1], kinds: nil, bars: ["BAR0"])
        XCTAssertFalse(onlyType1.isEmpty)
        XCTAssertTrue(onlyType1.allSatisfy { $0.backend == .type1 })
        XCTAssertEqual(onlyType1.count, 2 * 2 + 2 + 1 + 1)

        let kinds = Planner.plan(Self.matrix, backends: nil, kinds: [.bar, .sizeZero], bars: ["BAR0", "BAR1"])
        XCTAssertEqual(kinds.map(\.id), [
            "type1v2/size-zero@pre-device", "type1v2/size-zero@device", "type1v2/bar/BAR0", "type1v2/bar/BAR1",
            "type1/size-zero@pre-device", "type1/size-zero@device", "type1/bar/BAR0", "type1/bar/BAR1",
        ])

        // Filtering for a backend or kind the matrix does not have gives nothing.
        let m1 = Matrix(backends: [.type1], cases: [Self.template(.anonPrivate)])
        XCTAssertEqual(Planner.plan(m1, backends: [.type1v2], kinds: nil, bars: []), [])
        XCTAssertEqual(Planner.plan(m1, backends: nil, kinds: [.thp], bars: []), [])
        XCTAssertEqual(Planner.plan(m1, backends: [], kinds: nil, bars: []), [])
    }

    func testBARWithoutNamesPlannedOnce() {
        let m = Matrix(backends: [.type1], cases: [Self.template(.bar)])
        let plan = Planner.plan(m, backends: nil, kinds: nil, bars: [])
        XCTAssertEqual(plan.count, 1, "with no BAR names the bar case still appears once (and skips at run time)")
        XCTAssertEqual(plan.first?.kind, .bar)
        XCTAssertEqual(plan.first?.phase, .device)
    }

    func testCustomPhasesFromTemplate() {
        // A matrix may narrow an edge to one phase.
        let m = Matrix(backends: [.type1], cases: [
            CaseTemplate(kind: .iovaOverlap, size: 64 << 10, flags: ["read", "write"], phases: [.device]),
        ])
        XCTAssertEqual(Planner.plan(m, backends: nil, kinds: nil, bars: []).map(\.id), ["type1/iova-overlap@device"])
    }

    func testFlagVariantsGetDistinctIds() {
        let m = Matrix(backends: [.type1], cases: [
            Self.template(.anonPrivate),
            Self.template(.anonPrivate, flags: ["read"]),
            Self.template(.flagsNone, flags: []),
        ])
        let ids = Planner.plan(m, backends: nil, kinds: nil, bars: []).map(\.id)
        XCTAssertEqual(Set(ids).count, ids.count, "two templates of one kind must not share an id: \(ids)")
        XCTAssertEqual(ids.filter { $0.hasPrefix("type1/anon-private") }.count, 2)
        XCTAssertTrue(ids.contains("type1/anon-private"), "default flags keep the plain id: \(ids)")
    }

    // MARK: - IOVAAllocator

    static let q35 = [IOVARange(start: 0, end: 0xfedf_ffff), IOVARange(start: 0xfef0_0000, end: 0x7f_ffff_ffff)]

    func testAlignment() {
        let table: [(UInt64, UInt64)] = [
            (0, 2 << 20), (1, 2 << 20), (4096, 2 << 20), (64 << 10, 2 << 20), (2 << 20, 2 << 20),
            ((2 << 20) + 1, 4 << 20), (3 << 20, 4 << 20), (4 << 20, 4 << 20), ((4 << 20) + 1, 8 << 20),
            (512 << 20, 512 << 20), ((512 << 20) + 1, 1 << 30), (1 << 30, 1 << 30),
            ((1 << 30) + 1, 1 << 30), (4 << 30, 1 << 30), (.max, 1 << 30),
        ]
        for (size, want) in table {
            let a = IOVAAllocator.alignment(for: size)
            XCTAssertEqual(a, want, "alignment(for: \(size))")
            XCTAssertEqual(a & (a - 1), 0, "power of two")
            XCTAssertGreaterThanOrEqual(a, 2 << 20)
            XCTAssertLessThanOrEqual(a, 1 << 30)
        }
    }

    func testAllocationsAlignedInsideRangesAndDisjoint() {
        var alloc = IOVAAllocator(ranges: Self.q35)
        var taken: [(UInt64, UInt64)] = []
        let sizes: [UInt64] = [64 << 10, 2 << 20, 1 << 30, 4096, 3 << 20, 0, 64 << 10, (1 << 30) + 4096, 2 << 20, 8 << 20, 1]
        for size in sizes {
            guard let iova = alloc.allocate(size) else { return XCTFail("no IOVA for \(size)") }
            XCTAssertEqual(iova % IOVAAllocator.alignment(for: size), 0, "size \(size) at \(String(iova, radix: 16))")
            XCTAssertTrue(Self.q35.contains { $0.contains(iova, size: max(size, 1)) }, "size \(size) at \(String(iova, radix: 16)) is outside the ranges")
            let end = iova + max(size, 1)
            for (s, e) in taken {
                XCTAssertTrue(end <= s || iova >= e, "[\(String(iova, radix: 16)), \(String(end, radix: 16))) overlaps [\(String(s, radix: 16)), \(String(e, radix: 16)))")
            }
            taken.append((iova, end))
        }
    }

    func testZeroSizeAllocationsDoNotCollide() {
        var alloc = IOVAAllocator(ranges: Self.q35)
        let a = alloc.allocate(0), b = alloc.allocate(0), c = alloc.allocate(4096)
        XCTAssertNotNil(a)
        XCTAssertNotNil(b)
        XCTAssertNotNil(c)
        XCTAssertEqual(Set([a, b, c].compactMap { $0 }).count, 3, "a size-0 case still reserves its IOVA")
    }

    func testAllocatorSkipsTheGap() {
        let gap = 0xfee0_0000...0xfeef_ffff as ClosedRange<UInt64>
        // Walk 64K allocations up from below the gap, across it.
        var alloc = IOVAAllocator(ranges: Self.q35, start: 0xfe00_0000)
        var got: [UInt64] = []
        for _ in 0..<16 {
            guard let iova = alloc.allocate(64 << 10) else { return XCTFail("ran out at \(got.count)") }
            got.append(iova)
            XCTAssertFalse(gap.contains(iova) || gap.contains(iova + (64 << 10) - 1),
                           "64K at \(String(iova, radix: 16)) lands in the MSI gap")
            XCTAssertTrue(Self.q35.contains { $0.contains(iova, size: 64 << 10) })
        }
        XCTAssertTrue(got.contains { $0 < 0xfee0_0000 }, "used the space below the gap")
        XCTAssertTrue(got.contains { $0 >= 0xfef0_0000 }, "continued above the gap")
        XCTAssertEqual(got, got.sorted(), "allocations move upward")

        // Starting inside the gap.
        var inGap = IOVAAllocator(ranges: Self.q35, start: 0xfee0_0000)
        let x = inGap.allocate(64 << 10)
        XCTAssertNotNil(x)
        XCTAssertGreaterThanOrEqual(x ?? 0, 0xfef0_0000)
        XCTAssertEqual(x, 0xff00_0000, "first 2M-aligned IOVA of the second range")

        // A 4M allocation that would straddle the gap goes above it.
        var straddle = IOVAAllocator(ranges: Self.q35, start: 0xfec0_0000)
        let y = straddle.allocate(4 << 20)
        XCTAssertEqual(y, 0xff00_0000)
    }

    func testAllocatorReturnsNilWhenNothingFits() {
        let small = [IOVARange(start: 0x1000_0000, end: 0x1fff_ffff)]  // 256M
        var a = IOVAAllocator(ranges: small, start: 0)
        XCTAssertNil(a.allocate(1 << 30), "1G in a 256M range")
        XCTAssertNil(a.allocate(512 << 20))
        XCTAssertEqual(a.allocate(256 << 20), 0x1000_0000, "exactly the range")
        XCTAssertNil(a.allocate(4096), "the range is used up")
        XCTAssertNil(a.allocate(0))

        var past = IOVAAllocator(ranges: Self.q35, start: 0x80_0000_0000)
        XCTAssertNil(past.allocate(64 << 10), "start beyond every range")

        // The range holds no 2M-aligned 2M block.
        var tiny = IOVAAllocator(ranges: [IOVARange(start: 0x1000, end: 0x1f_ffff)], start: 0)
        XCTAssertNil(tiny.allocate(4096))

        // Near the top of the q35 space: the last 2M fits, the next does not.
        var top = IOVAAllocator(ranges: Self.q35, start: 0x7f_ffe0_0000)
        XCTAssertEqual(top.allocate(2 << 20), 0x7f_ffe0_0000)
        XCTAssertNil(top.allocate(2 << 20))
    }

    func testOutsideIsInNoRange() {
        let sets: [[IOVARange]] = [
            Self.q35,
            Self.q35.reversed(),
            [IOVARange(start: 0, end: (1 << 39) - 1)],
            [IOVARange(start: 0, end: 0xfff), IOVARange(start: 0x1800, end: 0xffff)],
            [IOVARange(start: 0, end: 0x10ff), IOVARange(start: 0x1800, end: 0x1fff)],
            [IOVARange(start: 0x10_0000, end: 0x1f_ffff)],
        ]
        for ranges in sets {
            for size: UInt64 in [1, 4096, 64 << 10, 2 << 20] {
                let alloc = IOVAAllocator(ranges: ranges)
                guard let x = alloc.outside(size: size) else {
                    XCTFail("no outside IOVA for \(ranges)")
                    continue
                }
                XCTAssertFalse(ranges.contains { $0.contains(x, size: size) }, "\(String(x, radix: 16)) size \(size) is valid in \(ranges)")
                XCTAssertFalse(ranges.contains { $0.contains(x, size: 1) }, "\(String(x, radix: 16)) starts inside \(ranges)")
                XCTAssertEqual(x % 4096, 0, "page aligned, so only the range check can refuse it")
            }
        }
        XCTAssertEqual(IOVAAllocator(ranges: Self.q35).outside(size: 64 << 10), 0xfee0_0000, "the gap comes first")
        XCTAssertEqual(IOVAAllocator(ranges: [IOVARange(start: 0, end: (1 << 39) - 1)]).outside(size: 4096), 1 << 39)
        XCTAssertNil(IOVAAllocator(ranges: [IOVARange(start: 0, end: .max)]).outside(size: 4096), "every IOVA is valid")
    }

    // MARK: - Stream

    static let header = RunHeader(tool: "vfio-exerciser 0.1.0", kernelRelease: "6.12.117+deb13-amd64", device: "0000:00:03.0",
                                  plan: ["type1/anon-private", "type1/size-zero@pre-device", "type1/hole"])

    static func record(_ id: String, _ outcome: Outcome, iova: UInt64 = 0x1_0000_0000, properties: [String: String] = [:]) -> CaseRecord {
        let parts = id.split(separator: "/")
        return CaseRecord(id: id, backend: String(parts[0]), kind: String(parts[1].prefix { $0 != "@" }),
                          phase: id.hasSuffix("@pre-device") ? .preDevice : .device, size: 64 << 10, flags: ["read", "write"],
                          iova: iova, outcome: outcome, mapNanos: 1234, unmapNanos: 567, unmappedBytes: 64 << 10,
                          properties: properties, checks: [Check("data", true, "64K written and read back")])
    }

    func testEventLineRoundTrip() {
        let events: [StreamEvent] = [
            .header(Self.header),
            .record(Self.record("type1/anon-private", .ok)),
            .record(Self.record("type1/size-zero@pre-device", .errno("EINVAL"))),
            .record(Self.record("type1/hole", .skip("no vma: reason with \"quotes\", / and \\"))),
            .record(Self.record("type1/thp", .ok, iova: 0xffff_ffff_ffff_f000,
                                properties: ["data": "first\nsecond VFXS {\"type\":\"end\",\"exit\":3}", "huge_page": "yes"])),
            .end(exitCode: 0),
            .end(exitCode: 1),
            .end(exitCode: 4),
        ]
        for e in events {
            let line = e.line
            XCTAssertTrue(line.hasPrefix(StreamEvent.marker), line)
            XCTAssertTrue(line.hasSuffix("\n"), line)
            XCTAssertEqual(line.filter { $0 == "\n" }.count, 1, "one event is one line: \(line)")
            XCTAssertEqual(StreamEvent.parse(Substring(line)), e, line)
            XCTAssertEqual(StreamEvent.parse(Substring(line.dropLast())), e, "without the newline: \(line)")
        }
    }

    func testParseRejectsNoise() {
        for s in ["", "VFXS", "VFXS ", "VFXS {}", "VFXS {\"type\":\"bogus\"}", "VFXS {\"type\":\"end\"}",
                  "VFXS {\"type\":\"end\",\"exit\":\"zero\"}", "[    1.234567] vfio-pci 0000:00:03.0: enabling device",
                  "{\"type\":\"end\",\"exit\":0}", "vfxs {\"type\":\"end\",\"exit\":0}"] {
            XCTAssertNil(StreamEvent.parse(Substring(s)), s)
        }
    }

    func testParseToleratesNoiseBeforeTheMarker() {
        let line = "\u{1b}[0m[   12.5] junk " + StreamEvent.end(exitCode: 1).line
        XCTAssertEqual(StreamEvent.parse(Substring(line)), .end(exitCode: 1))
    }

    func testContentsWithNoiseCRLFAndTruncation() {
        let r1 = Self.record("type1/anon-private", .ok)
        let r2 = Self.record("type1/size-zero@pre-device", .errno("EINVAL"))
        let r3 = Self.record("type1/hole", .errno("EFAULT"))
        let crlf = { (s: String) in String(s.dropLast()) + "\r\n" }
        let truncated = String(StreamEvent.record(Self.record("type1/thp", .ok)).line.prefix(60))
        let text = "SeaBIOS (version 1.16)\r\n"
            + "[    0.000000] Linux version 6.12.117\n"
            + crlf(StreamEvent.header(Self.header).line)
            + "\n\n"
            + StreamEvent.record(r1).line
            + "VFXS {\"type\":\"record\",\"record\":{\"id\":\"broken\"}}\n"
            + "[    3.14] random kernel line\r\n"
            + crlf(StreamEvent.record(r2).line)
            + StreamEvent.record(r3).line
            + truncated
        let c = StreamContents(text: text)
        XCTAssertEqual(c.header, Self.header)
        XCTAssertEqual(c.records, [r1, r2, r3], "records in stream order; noise, broken and truncated lines dropped")
        XCTAssertNil(c.exitCode, "no end marker: the run did not finish")
    }

    func testContentsWithEndMarker() {
        let r1 = Self.record("type1/anon-private", .ok)
        let text = StreamEvent.header(Self.header).line + StreamEvent.record(r1).line + "noise\n" + StreamEvent.end(exitCode: 1).line
        let c = StreamContents(text: text)
        XCTAssertEqual(c.records, [r1])
        XCTAssertEqual(c.exitCode, 1)
        // The end marker itself truncated: still unfinished.
        let cut = StreamEvent.header(Self.header).line + StreamEvent.record(r1).line + String(StreamEvent.end(exitCode: 0).line.prefix(12))
        XCTAssertNil(StreamContents(text: cut).exitCode)
        XCTAssertEqual(StreamContents(text: cut).records, [r1])
    }

    func testContentsOfNothing() {
        let c = StreamContents(text: "")
        XCTAssertNil(c.header)
        XCTAssertEqual(c.records, [])
        XCTAssertNil(c.exitCode)
        let noise = StreamContents(text: "Kernel panic - not syncing: Fatal exception\r\n---[ end Kernel panic ]---")
        XCTAssertNil(noise.header)
        XCTAssertEqual(noise.records, [])
        XCTAssertNil(noise.exitCode)
    }

    func testContentsKeepsManyRecordsInOrder() {
        let records = (0..<200).map { Self.record("type1/case-\($0)", $0 % 3 == 0 ? .ok : .errno("EFAULT"), iova: UInt64($0) << 21) }
        let text = records.map { StreamEvent.record($0).line }.joined(separator: "noise line\r\n")
        XCTAssertEqual(StreamContents(text: text).records, records)
    }

    // MARK: - Judge

    static let expectationsYAML = """
        schema: 1
        expectations:
          - kind: [anon-private, unmap-all, bar]
            outcome: ok
            decided_by: "test"
          - kind: size-zero
            outcome: EINVAL
            decided_by: "test"
        """

    static func expectations() throws -> Expectations {
        let node = try XCTUnwrap(try Yams.compose(yaml: expectationsYAML))
        return try Expectations.parse(node, file: "test-expectations.yaml")
    }

    static let lostPlan = ["type1/anon-private", "type1/size-zero@pre-device", "type1/size-zero@device",
                           "type1/bar/BAR0", "type1v2/unmap-all@pre-device"]

    func testLostCasesAreFailuresNamingTheIncident() throws {
        let header = RunHeader(tool: "t", kernelRelease: "6.1.0-50-amd64", device: "0000:00:03.0", plan: Self.lostPlan)
        let records = [Self.record("type1/anon-private", .ok), Self.record("type1/size-zero@pre-device", .errno("EINVAL"))]
        let incident = "guest panicked: Kernel panic - not syncing: Fatal exception in interrupt"
        let report = Judge(expectations: try Self.expectations()).report(header: header, records: records, incidents: [incident, "second incident"])

        XCTAssertEqual(report.results.count, Self.lostPlan.count, "every planned case has a result")
        XCTAssertEqual(report.results.prefix(2).map(\.verdict.kind), [.pass, .pass], report.results.prefix(2).map(\.verdict.reason).joined(separator: "; "))
        let lost = Array(report.results.dropFirst(2))
        XCTAssertEqual(lost.map(\.record.id), ["type1/size-zero@device", "type1/bar/BAR0", "type1v2/unmap-all@pre-device"],
                       "lost cases in plan order")
        XCTAssertEqual(lost.map(\.record.kind), ["size-zero", "bar", "unmap-all"])
        XCTAssertEqual(lost.map(\.record.backend), ["type1", "type1", "type1v2"])
        XCTAssertEqual(lost.map(\.record.phase), [.device, .device, .preDevice])
        for r in lost {
            XCTAssertEqual(r.record.outcome, .lost(incident), r.record.id)
            XCTAssertEqual(r.verdict.kind, .fail, r.record.id)
            XCTAssertTrue(r.verdict.reason.contains(incident), "\(r.record.id): \(r.verdict.reason)")
            XCTAssertFalse(r.record.cleanupOK)
        }
        XCTAssertEqual(report.count(.fail), 3)
        XCTAssertEqual(report.count(.pass), 2)
        XCTAssertEqual(report.incidents, [incident, "second incident"])
        XCTAssertEqual(report.exitCode, 1)
    }

    func testLostCasesWithoutIncident() throws {
        let header = RunHeader(tool: "t", kernelRelease: "6.1.0-50-amd64", device: "d", plan: Self.lostPlan)
        let report = Judge(expectations: try Self.expectations()).report(header: header, records: [Self.record("type1/anon-private", .ok)])
        let lost = report.results.filter { if case .lost = $0.record.outcome { return true } else { return false } }
        XCTAssertEqual(lost.count, 4)
        for r in lost {
            XCTAssertEqual(r.verdict.kind, .fail)
            XCTAssertFalse(r.verdict.reason.isEmpty)
        }
        XCTAssertTrue(report.incidents.isEmpty)
        XCTAssertEqual(report.exitCode, 1, "lost cases fail the run even without an incident")
    }

    func testCompleteRunPassesWithExitZero() throws {
        // Control for the two tests above: the same plan with every record present passes.
        let header = RunHeader(tool: "t", kernelRelease: "6.1.0-50-amd64", device: "d", plan: Self.lostPlan)
        let records = [
            Self.record("type1/anon-private", .ok), Self.record("type1/size-zero@pre-device", .errno("EINVAL")),
            Self.record("type1/size-zero@device", .errno("EINVAL")), Self.record("type1/bar/BAR0", .ok),
            Self.record("type1v2/unmap-all@pre-device", .ok),
        ]
        // record() splits "bar/BAR0" as kind "bar": check the helper did what the judge expects.
        XCTAssertEqual(records[3].kind, "bar")
        let report = Judge(expectations: try Self.expectations()).report(header: header, records: records)
        XCTAssertEqual(report.results.count, 5)
        XCTAssertEqual(report.count(.pass), 5, report.results.map { "\($0.record.id): \($0.verdict.reason)" }.joined(separator: "\n"))
        XCTAssertEqual(report.exitCode, 0)
        // One incident alone turns it into a failure.
        let withIncident = Judge(expectations: try Self.expectations()).report(header: header, records: records, incidents: ["WARNING: at mm/gup.c"])
        XCTAssertEqual(withIncident.exitCode, 1)
    }

    /// The judge recovers backend, kind and phase of a lost case from its id alone: that must
    /// agree with what the planner put in the id, for every id the planner can produce.
    func testLostRecordFieldsAgreeWithPlannerIds() throws {
        let m = Matrix(backends: [.type1, .type1v2], cases: [
            Self.template(.anonPrivate), Self.template(.anonPrivate, flags: ["read"]), Self.template(.readonlyRead),
            Self.template(.bar), Self.template(.barPlusAnon), Self.template(.sizeZero, size: 0),
            Self.template(.flagsNone, flags: []), Self.template(.unmapSubrange), Self.template(.memfdHugetlb2M),
        ])
        let plan = Planner.plan(m, backends: nil, kinds: nil, bars: ["BAR0", "BAR2"])
        let header = RunHeader(tool: "t", kernelRelease: "6.12.117+deb13-amd64", device: "d", plan: plan.map(\.id))
        let report = Judge(expectations: try Self.expectations()).report(header: header, records: [], incidents: ["hung"])
        XCTAssertEqual(report.results.count, plan.count)
        for (c, r) in zip(plan, report.results) {
            XCTAssertEqual(r.record.id, c.id)
            XCTAssertEqual(r.record.backend, c.backend.rawValue, c.id)
            XCTAssertEqual(r.record.kind, c.kind.rawValue, c.id)
            XCTAssertEqual(r.record.phase, c.phase, c.id)
            XCTAssertEqual(r.record.outcome, .lost("hung"), c.id)
            XCTAssertEqual(r.verdict.kind, .fail, c.id)
        }
        XCTAssertEqual(report.exitCode, 1)
    }
}

/// The Intel IOMMU debugfs dump, as 7.3 prints it (captured in the test VM).
final class IOMMUDebugfsTests: XCTestCase {
    static let dump = """
    Device 0000:00:03.0 @0x148be8000
    IOVA_PFN         \tPML5E             \tPML4E             \tPDPE              \tPDE               \tPTE
    0x0000000040000 |\t0x0000000000000000\t0x0000000000000000\t0x0000000100000083
    0x0000000080000 |\t0x0000000000000000\t0x0000000000000000\t0x0000000149173403\t0x000000017b400083
    0x0000000100000 |\t0x0000000000000000\t0x0000000000000000\t0x0000000149178403\t0x0000000149174403\t0x000000014e741003
    0x0000000100001 |\t0x0000000000000000\t0x0000000000000000\t0x0000000149178403\t0x0000000149174403\t0x000000014e742003
    """

    func testLevels() {
        XCTAssertEqual(IOMMUDebugfs.parse(Self.dump, iova: 0x4000_0000), "1G")
        XCTAssertEqual(IOMMUDebugfs.parse(Self.dump, iova: 0x8000_0000), "2M")
        XCTAssertEqual(IOMMUDebugfs.parse(Self.dump, iova: 0x1_0000_0000), "4K")
        XCTAssertEqual(IOMMUDebugfs.parse(Self.dump, iova: 0x1_0000_1000), "4K")
    }

    func testUnmappedIOVAIsNil() {
        XCTAssertNil(IOMMUDebugfs.parse(Self.dump, iova: 0x2_0000_0000))
        XCTAssertNil(IOMMUDebugfs.parse("garbage | x\n|\n0xzz | 1 2 3", iova: 0))
    }
}
