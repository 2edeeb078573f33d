import Foundation
import XCTest
@testable import Exerciser

/// `diff` and `matrix` on reports recorded from real VM runs (Debian 6.1 and 6.12, trimmed to a
/// few kinds): the diff must find what the kernels changed without being told where to look,
/// and nothing else.
final class CompareTests: XCTestCase {
    func fixture(_ name: String) throws -> RunReport {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name).json")
        return try JSONDecoder().decode(RunReport.self, from: Data(contentsOf: url))
    }

    func testDiffFindsTheFsFileFlipAndTheUntouchedReadAccounting() throws {
        let d = RunDiff(try fixture("debian-6.1"), try fixture("debian-6.12"))
        XCTAssertEqual(d.cases.map(\.id).sorted(), ["type1/anon-untouched[r]", "type1/fs-file", "type1v2/anon-untouched[r]", "type1v2/fs-file"])
        let fs = try XCTUnwrap(d.cases.first { $0.id == "type1v2/fs-file" })
        XCTAssertEqual(fs.changes.first { $0.field == "outcome" }.map { [$0.before, $0.after] }, ["ok", "EFAULT"])
        let ro = try XCTUnwrap(d.cases.first { $0.id == "type1v2/anon-untouched[r]" })
        XCTAssertEqual(ro.changes.map(\.field), ["accounted"])
        XCTAssertEqual(d.unchanged, 20)
        // Grouped by kind in list order: anon-untouched before fs-file.
        XCTAssertEqual(d.cases.map(\.kind), ["anon-untouched", "anon-untouched", "fs-file", "fs-file"])
        for f in RunDiff.Format.allCases { XCTAssertTrue(d.render(f).contains("fs-file"), "\(f)") }
    }

    func testDiffOfARunWithItselfIsEmptyWhateverTheTimingsAndIOVAs() throws {
        let a = try fixture("debian-6.1")
        var b = a
        for i in b.results.indices {
            b.results[i].record.mapNanos = (b.results[i].record.mapNanos ?? 0) + 12345
            b.results[i].record.iova += 0x100000
        }
        b.elapsedSeconds = 1
        XCTAssertTrue(RunDiff(a, b).isEmpty)
        // A case that disappears, one that appears, a check that starts failing: each is named.
        var c = a
        let gone = c.results.removeFirst()
        c.results[0].record.checks.append(Check("data-ring", false, "byte 3"))
        var extra = gone
        extra.record.id = "type1/new-kind"
        c.results.append(extra)
        let d = RunDiff(a, c)
        XCTAssertEqual(Set(d.cases.map(\.status)), ["removed", "added", "changed"])
        XCTAssertEqual(d.cases.first { $0.status == "changed" }?.changes.map(\.field), ["failed_checks"])
    }

    func testKindTimesEventCasesGetRowsOfTheirOwnAfterThePlainKinds() throws {
        var r = try fixture("debian-6.12")
        var ev = try XCTUnwrap(r.results.first { $0.record.id == "type1v2/anon-private" })
        ev.record.id += "+fork-parent-writes"
        ev.record.event = "fork-parent-writes"
        ev.record.observations = ["event": "ok", "device_write": "seen", "cpu_write": "seen", "child_sees": "stale"]
        r.results.insert(ev, at: 0)
        let m = CrossKernelMatrix([("k", r)])
        XCTAssertEqual(m.kinds.last, "anon-private × fork-parent-writes")
        let plain = try XCTUnwrap(m.kinds.firstIndex(of: "anon-private")), event = m.kinds.count - 1
        let col = try XCTUnwrap(m.columns.firstIndex { $0.members.contains { $0.backend == "type1v2" } })
        XCTAssertEqual(m.cells[plain][col].text, "ok+data")
        XCTAssertEqual(m.cells[event][col].text, "seen/seen child:stale")
    }

    /// PFNs, addresses and child pids change from boot to boot: not a change. A zone or what a
    /// side saw after an event is.
    func testDiffIgnoresFramesAndPidsButNotZonesOrObservations() throws {
        let a = try fixture("debian-6.1")
        var b = a
        var c = a
        for (i, r) in a.results.enumerated() where r.record.id == "type1v2/anon-private" {
            var x = r.record
            x.properties = ["pages_pinned": "pfn 0x14f346, Normal×16", "fork": "child 316", "moved_to": "0x7f698f000000"]
            x.observations = ["device_write": "seen"]
            b.results[i].record = x
            var y = x
            y.properties = ["pages_pinned": "pfn 0x14eb00, Normal×16", "fork": "child 365", "moved_to": "0x7fd54ca00000"]
            c.results[i].record = y
        }
        XCTAssertTrue(RunDiff(b, c).isEmpty, "\(RunDiff(b, c).cases)")
        for (i, r) in c.results.enumerated() where r.record.id == "type1v2/anon-private" {
            c.results[i].record.properties["pages_pinned"] = "pfn 0x330d, DMA32×16"
            c.results[i].record.observations = ["device_write": "zero"]
        }
        XCTAssertEqual(Set(RunDiff(b, c).cases.flatMap(\.changes).map(\.field)), ["pages_pinned", "observations"])
    }

    func testMatrixMergesAgreeingColumnsAndLeavesAllSkippedOnesOut() throws {
        let m = CrossKernelMatrix([("debian-6.1", try fixture("debian-6.1")), ("debian-6.12", try fixture("debian-6.12"))])
        // iommufd skipped everywhere on Debian: no column; mdev-map agrees on both kernels: one.
        XCTAssertFalse(m.columns.contains { $0.label.contains("iommufd") })
        XCTAssertTrue(m.columns.contains { $0.label == "debian-6.1, debian-6.12 mdev-map" }, "\(m.columns.map(\.label))")
        let fs = try XCTUnwrap(m.kinds.firstIndex(of: "fs-file"))
        let col61 = try XCTUnwrap(m.columns.firstIndex { $0.label == "debian-6.1 type1v2" })
        let col612 = try XCTUnwrap(m.columns.firstIndex { $0.label == "debian-6.12 type1v2" })
        XCTAssertEqual(m.cells[fs][col61].text, "ok+data")
        XCTAssertEqual(m.cells[fs][col612].text, "EFAULT")
        let md = m.markdown()
        XCTAssertEqual(CrossKernelMatrix.tableLines(md).count, m.kinds.count + 2)
        XCTAssertTrue(md.contains("debian-6.12: 6.12."))
        // A failed case shows in its cell, and the HTML colours it and keeps its details.
        var bad = try fixture("debian-6.12")
        let i = try XCTUnwrap(bad.results.firstIndex { $0.record.id == "type1v2/fs-file" })
        bad.results[i].verdict = Verdict(.fail, "expected EFAULT, got ok")
        let m2 = CrossKernelMatrix([("debian-6.12", bad)])
        XCTAssertTrue(m2.markdown().contains("EFAULT ✗"))
        let html = m2.html()
        XCTAssertTrue(html.contains("#f6c6c6") && html.contains("expected EFAULT, got ok") && html.hasPrefix("<!DOCTYPE html>"))
    }
}

/// The terminal summary fits the screen it is given: no line wider than the terminal at 80 or
/// 120 columns, every kind and every backend column present, failures listed after the grid.
final class GridSummaryTests: XCTestCase {
    func report() throws -> RunReport {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/debian-6.1.json")
        var r = try JSONDecoder().decode(RunReport.self, from: Data(contentsOf: url))
        // Every backend, each disagreeing with the others somewhere, so no column merges: the
        // widest grid a run can give.
        let base = r.results.filter { $0.record.backend == "type1v2" }
        r.results = []
        for (n, b) in BackendKind.allCases.enumerated() {
            for var c in base {
                c.record.backend = b.rawValue
                c.record.id = c.record.id.replacingOccurrences(of: "type1v2/", with: "\(b.rawValue)/")
                if c.record.kind == "fs-file" {
                    c.record.outcome = .errno(["EFAULT", "EINVAL", "ENOENT", "EPERM", "ENOSPC", "EEXIST", "ENOMEM", "EBUSY"][n])
                    c.record.properties["data"] = nil
                }
                if c.record.kind == "anon-private" && n == 3 { c.verdict = Verdict(.fail, "expected ok, got EFAULT") }
                r.results.append(c)
            }
        }
        return r
    }

    func visibleWidth(_ line: Substring) -> Int {
        line.replacingOccurrences(of: "\u{1b}\\[[0-9;]*m", with: "", options: .regularExpression).count
    }

    func testFitsEightyAndOneHundredTwentyColumns() throws {
        let r = try report()
        for width in [80, 120] {
            for color in [false, true] {
                let s = GridSummary.render(r, width: width, color: color)
                let lines = s.split(separator: "\n")
                XCTAssertTrue(lines.allSatisfy { visibleWidth($0) <= width }, "width \(width): \(lines.filter { visibleWidth($0) > width })")
                for k in Set(r.results.map(\.record.kind)) { XCTAssertTrue(s.contains(k), k) }
                for b in BackendKind.allCases { XCTAssertTrue(s.contains(GridSummary.short[b.rawValue]!), b.rawValue) }
                XCTAssertTrue(s.contains("Failures:") && s.contains("iommufd-compat-type1v2/anon-private: expected ok, got EFAULT"))
                XCTAssertEqual(s.contains("\u{1b}["), color)
            }
        }
        // At 80 columns the backends do not fit one grid: the kinds are repeated for the rest.
        let narrow = GridSummary.render(r, width: 80, color: false)
        XCTAssertGreaterThan(narrow.components(separatedBy: "\nanon-private").count, 2, narrow)
    }
}
