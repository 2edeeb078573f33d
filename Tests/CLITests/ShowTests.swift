import FuzzSupport
import Foundation
import XCTest

/// `show --format summary` through the built binary at a fixed width: the grid fits 80 and 120
/// columns and still names every kind of the recorded run.
final class ShowTests: XCTestCase {
    func testSummaryFitsTheTerminalWidth() throws {
        guard let exe = builtBinary() else { return XCTFail("no built vfio-exerciser binary next to the tests (swift build first)") }
        let report = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("ExerciserTests/Fixtures/debian-6.12.json").path
        let kinds = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any]
        let ids = ((kinds?["results"] as? [[String: Any]]) ?? []).compactMap { ($0["record"] as? [String: Any])?["kind"] as? String }
        XCTAssertFalse(ids.isEmpty)
        for width in [80, 120] {
            let r = spawn("/usr/bin/env", ["COLUMNS=\(width)", exe, "show", report, "--format", "summary", "--color", "never"], timeout: 30)
            let out = String(decoding: r.stdout, as: UTF8.self)
            XCTAssertEqual(r.status, 0, String(decoding: r.stderr, as: UTF8.self))
            let lines = out.split(separator: "\n")
            XCTAssertGreaterThan(lines.count, 5)
            XCTAssertTrue(lines.allSatisfy { $0.count <= width }, "wider than \(width): \(lines.filter { $0.count > width })")
            for k in Set(ids) { XCTAssertTrue(out.contains(k), "\(k) missing at \(width) columns") }
        }
        // Piped without --format: the full table, not the grid.
        let t = spawn(exe, ["show", report], timeout: 30)
        let table = String(decoding: t.stdout, as: UTF8.self)
        XCTAssertTrue(table.contains("\nVERDICT ") && !table.contains("passed, 0 failed, 0 skipped, 0 xfail\n\n "), String(table.prefix(300)))
    }
}
