import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Exerciser

/// Reports built in code (no kernel) and read back with small parsers.
final class ReportTests: XCTestCase {
    static let hostile = "bad <&\"'> \u{01}ctl\u{1B}[31mesc\nnewline # hash"

    static func rec(_ id: String, kind: String = "anon-private", backend: String = "type1", outcome: Outcome,
                    map: UInt64? = 12_345, unmap: UInt64? = 6_789, unmapped: UInt64? = 65536,
                    properties: [String: String] = [:], checks: [Check] = [], accounted: Int64? = nil,
                    iommuPage: String? = nil, kernelLog: [String] = [], caseNanos: UInt64? = nil) -> CaseRecord {
        var r = CaseRecord(id: id, backend: backend, kind: kind, phase: .device, size: 64 << 10, flags: ["read", "write"],
                           iova: 0x10_0000, outcome: outcome, mapNanos: map, unmapNanos: unmap, unmappedBytes: unmapped,
                           properties: properties, checks: checks, accountedBytes: accounted, iommuPageSize: iommuPage,
                           kernelLog: kernelLog)
        r.caseNanos = caseNanos
        return r
    }

    static let hostileKernelLine = "vfio-pci 0000:00:04.0: iommu fault\u{1B}[2J\nat 0x1000 # not a directive"
    static let warnLine = "WARNING: CPU: 0 PID: 42 at drivers/vfio/vfio_iommu_type1.c:800 vfio_unpin_pages_remote+0x1a/0x40"
    static let cleanupUnmapped = "65536 bytes from the case's IOVA window"

    static let cleanHygiene = [
        Check("fds", true, "12 open, as before"), Check("maps", true, "no region or device mapping left"),
        Check("locked-memory", true, "VmLck 0 → 0 kB, VmPin 0 → 0 kB"), Check("hugepages", true, "free counts as before"),
    ]
    /// fds and hugepages fail, maps and locked-memory pass.
    static let dirtyHygiene = [
        Check("fds", false, "leaked: 9 -> /dev/vfio/7"), Check("maps", true, "no region or device mapping left"),
        Check("locked-memory", true, "VmLck 0 → 0 kB, VmPin 0 → 0 kB"),
        Check("hugepages", false, "hugepages-2048kB free 8 → 7"),
    ]

    /// pass, fail (wrong errno), skip, xfail, lost, and a fail with a hostile reason; data checked ok,
    /// not checkable and mismatched; accounting, IOMMU page sizes, kernel log lines, a whole-case time.
    static func sample(incidents: [String] = ["guest kernel oops after case 4"], hygiene: [Check]? = nil) -> RunReport {
        let results: [CaseResult] = [
            CaseResult(record: rec("type1/anon-private/device/rw", outcome: .ok,
                                   properties: ["huge_page": "no", "data": "ok (data-ring)"],
                                   checks: [Check("data-ring", true, "16 page(s) read and written via 0x100000"),
                                            Check("accounting-restored", true, "locked/pinned memory back to its baseline")],
                                   accounted: 65536, iommuPage: "4K"),
                       verdict: Verdict(.pass, "ok", expected: "ok", decidedBy: "vfio_pin_pages_remote")),
            CaseResult(record: rec("type1/hole/device/rw", kind: "hole", outcome: .errno("EINVAL"), map: 900, unmap: nil, unmapped: nil,
                                   checks: [Check("refused-map-left-nothing", true, "0 bytes to unmap")]),
                       verdict: Verdict(.fail, "got EINVAL, expected EFAULT", expected: "EFAULT", decidedBy: "vaddr_get_pfns")),
            CaseResult(record: rec("type1v2/hugetlb-1G/device/rw", kind: "hugetlb-1G", backend: "type1v2",
                                   outcome: .skip("no 1G pages"), map: nil, unmap: nil, unmapped: nil),
                       verdict: Verdict(.skip, "no 1G pages")),
            CaseResult(record: rec("type1/fs-file/device/rw", kind: "fs-file", outcome: .ok,
                                   properties: ["fs": "ext4", "a": "b", "data": "not checkable: device MMIO"],
                                   accounted: 2 << 20, iommuPage: "2M", caseNanos: 2_345_678_901),
                       verdict: Verdict(.xfail, "known kernel bug reproduced (https://bugs.example/1)", expected: "ok",
                                        decidedBy: "pin_user_pages", reference: "https://bugs.example/1")),
            CaseResult(record: rec("type1/bar/device/rw", kind: "bar", outcome: .lost("guest panicked"), map: nil, unmap: nil, unmapped: nil,
                                   properties: ["cleanup_unmapped": cleanupUnmapped],
                                   kernelLog: [warnLine, "Call Trace:"]),
                       verdict: Verdict(.fail, "case did not finish: guest panicked")),
            CaseResult(record: rec("type1/evil#name\nx", kind: "memfd", outcome: .errno("EFAULT"),
                                   properties: ["data": "mismatch"],
                                   checks: [Check("readback", false, "byte 0 was 0xff")],
                                   accounted: -4096, iommuPage: "1G", kernelLog: [hostileKernelLine]),
                       verdict: Verdict(.fail, hostile, expected: "EFAULT", decidedBy: "vfio_dma_do_map")),
        ]
        return RunReport(header: RunHeader(tool: "vfio-exerciser 0.1", kernelRelease: "6.12.57+deb13-amd64",
                                           device: "0000:00:04.0", plan: results.map(\.record.id)),
                         results: results, incidents: incidents, elapsedSeconds: 12.5, hygiene: hygiene)
    }

    // MARK: KTAP

    struct KTAP {
        var plan: Int
        var results: [(ok: Bool, number: Int, name: String, directive: String?, reason: String?)] = []
        var diagnostics: [String] = []
        var totals: [String: Int] = [:]
    }

    /// A small KTAP v1 parser: strict about everything the reporter promises.
    func parseKTAP(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> KTAP {
        XCTAssertTrue(text.hasSuffix("\n"), "KTAP must end with a newline", file: file, line: line)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        XCTAssertEqual(lines.first, "KTAP version 1", file: file, line: line)
        guard lines.count >= 2, lines[1].hasPrefix("1.."), let plan = Int(lines[1].dropFirst(3)) else {
            XCTFail("second line must be the plan 1..N: \(lines.dropFirst().first ?? "")", file: file, line: line)
            throw CocoaError(.coderReadCorrupt)
        }
        var k = KTAP(plan: plan)
        for l in lines.dropFirst(2) {
            XCTAssertFalse(l.contains("\u{1B}"), "no escape bytes in KTAP: \(l)", file: file, line: line)
            if l.hasPrefix("# ") {
                k.diagnostics.append(String(l.dropFirst(2)))
                if l.hasPrefix("# Totals: ") {
                    for kv in l.dropFirst("# Totals: ".count).split(separator: " ") {
                        let p = kv.split(separator: ":")
                        XCTAssertEqual(p.count, 2, "totals item \(kv)", file: file, line: line)
                        k.totals[String(p[0])] = Int(p[1])
                    }
                }
                continue
            }
            let ok: Bool
            var rest: Substring
            if l.hasPrefix("ok ") { ok = true; rest = l.dropFirst(3) }
            else if l.hasPrefix("not ok ") { ok = false; rest = l.dropFirst(7) }
            else { XCTFail("unexpected KTAP line: \(l)", file: file, line: line); continue }
            let numText = rest.prefix(while: { $0.isNumber })
            guard let n = Int(numText) else { XCTFail("no test number: \(l)", file: file, line: line); continue }
            rest = rest.dropFirst(numText.count)
            XCTAssertEqual(rest.first, " ", "number then a space: \(l)", file: file, line: line)
            rest = rest.dropFirst()
            var name = String(rest), directive: String?, reason: String?
            if let hash = rest.firstIndex(of: "#") {
                name = String(rest[..<hash]).trimmingCharacters(in: .whitespaces)
                let d = rest[rest.index(after: hash)...].trimmingCharacters(in: .whitespaces)
                let word = d.prefix(while: { !$0.isWhitespace })
                directive = String(word)
                reason = d.dropFirst(word.count).trimmingCharacters(in: .whitespaces)
            }
            k.results.append((ok, n, name, directive, reason))
        }
        return k
    }

    func testKTAPStructure() throws {
        let report = Self.sample()
        let text = Reporter.render(report, format: .ktap, color: true)
        let k = try parseKTAP(text)

        XCTAssertEqual(k.plan, report.results.count)
        XCTAssertEqual(k.results.count, k.plan, "plan count equals number of result lines")
        XCTAssertEqual(k.results.map(\.number), Array(1...report.results.count), "numbered 1..N in order")

        // One result line per case, in order, with kselftest's ok/not ok and directives.
        XCTAssertEqual(k.results.map(\.ok), [true, false, true, true, false, false])
        XCTAssertEqual(k.results.map(\.directive), [nil, nil, "SKIP", "XFAIL", nil, nil])
        XCTAssertEqual(k.results[0].name, "type1/anon-private/device/rw")
        XCTAssertEqual(k.results[2].reason, "no 1G pages")
        XCTAssertEqual(k.results[3].reason, "known kernel bug reproduced (https://bugs.example/1)")
        XCTAssertTrue(text.contains("\nok 3 type1v2/hugetlb-1G/device/rw # SKIP no 1G pages\n"), text)
        XCTAssertTrue(text.contains("\nok 4 type1/fs-file/device/rw # XFAIL known kernel bug"), text)
        XCTAssertTrue(text.contains("\nnot ok 2 type1/hole/device/rw\n"), text)

        // The hostile id is one line and has no '#', so it cannot turn into a directive.
        let evil = k.results[5]
        XCTAssertNil(evil.directive)
        XCTAssertFalse(evil.name.contains("#"))
        XCTAssertTrue(evil.name.hasPrefix("type1/evil"), evil.name)
        XCTAssertTrue(evil.name.hasSuffix("x"), evil.name)

        // Totals agree with the counts.
        XCTAssertEqual(k.totals, ["pass": 1, "fail": 3, "xfail": 1, "xpass": 0, "skip": 1, "error": 0])
        XCTAssertEqual(text.split(separator: "\n").last.map(String.init),
                       "# Totals: pass:1 fail:3 xfail:1 xpass:0 skip:1 error:0")
    }

    func testKTAPDiagnosticsPrecedeTheirResult() throws {
        let text = Reporter.render(Self.sample(), format: .ktap, color: false)
        let lines = text.split(separator: "\n").map(String.init)
        guard let r2 = lines.firstIndex(of: "not ok 2 type1/hole/device/rw"),
              let r1 = lines.firstIndex(of: "ok 1 type1/anon-private/device/rw") else {
            return XCTFail("result lines missing:\n\(text)")
        }
        let block = lines[(r1 + 1)..<r2]
        XCTAssertTrue(block.allSatisfy { $0.hasPrefix("# ") }, "only diagnostics between results: \(block)")
        XCTAssertTrue(block.contains("# outcome: EINVAL"), "\(block)")
        XCTAssertTrue(block.contains("# expected: EFAULT"), "\(block)")
        XCTAssertTrue(block.contains("# decided_by: vaddr_get_pfns"), "\(block)")
        XCTAssertTrue(block.contains("# reason: got EINVAL, expected EFAULT"), "\(block)")

        // Failed checks are reported in the block for the evil case, and the reason is one line.
        guard let r6 = lines.firstIndex(where: { $0.hasPrefix("not ok 6 ") }) else { return XCTFail(text) }
        let block6 = lines[..<r6].reversed().prefix(while: { $0.hasPrefix("# ") })
        XCTAssertTrue(block6.contains("# failed check: readback: byte 0 was 0xff"), "\(block6)")
        XCTAssertTrue(block6.contains { $0.hasPrefix("# reason: bad <&\"'>") }, "\(block6)")

        // Incidents are diagnostics too, and every line is either the header, a plan, a result or "# ".
        XCTAssertTrue(lines.contains("# incident: guest kernel oops after case 4"), text)
        for l in lines.dropFirst(2) {
            XCTAssertTrue(l.hasPrefix("# ") || l.hasPrefix("ok ") || l.hasPrefix("not ok "), "stray line: \(l)")
        }
        XCTAssertFalse(text.contains("\u{1B}"))
        XCTAssertFalse(text.contains("\u{01}"))
    }

    func testKTAPEmptyAndNameSanitising() throws {
        let empty = RunReport(header: RunHeader(tool: "t", kernelRelease: "6.1.0", device: "d", plan: []), results: [])
        let k = try parseKTAP(Reporter.render(empty, format: .ktap, color: false))
        XCTAssertEqual(k.plan, 0)
        XCTAssertEqual(k.results.count, 0)
        XCTAssertEqual(k.totals["pass"], 0)

        XCTAssertEqual(KTAPReporter.name("a#b\nc", number: 1), "a_b c")
        XCTAssertEqual(KTAPReporter.name("###", number: 7), "___")
        XCTAssertEqual(KTAPReporter.name(" \n ", number: 7), "case_7")
    }

    // MARK: JUnit

    final class JUnitCollector: NSObject, XMLParserDelegate {
        struct Case { var classname = "", name = "", time = "", failure: [String: String]?, skipped: [String: String]?
                      var systemOut = "", failureText = "" }
        var suites: [[String: String]] = []
        var suitesRoot: [String: String]?
        var cases: [Case] = []
        var properties: [String: String] = [:]
        var element: [String] = []
        var error: Error?

        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            element.append(name)
            switch name {
            case "testsuites": suitesRoot = attributes
            case "testsuite": suites.append(attributes)
            case "property": properties[attributes["name"] ?? ""] = attributes["value"]
            case "testcase": cases.append(Case(classname: attributes["classname"] ?? "", name: attributes["name"] ?? "",
                                               time: attributes["time"] ?? ""))
            case "failure": cases[cases.count - 1].failure = attributes
            case "skipped": cases[cases.count - 1].skipped = attributes
            default: break
            }
        }
        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            element.removeLast()
        }
        func parser(_ parser: XMLParser, foundCharacters string: String) {
            if element.last == "system-out" { cases[cases.count - 1].systemOut += string }
            if element.last == "failure" { cases[cases.count - 1].failureText += string }
        }
        func parser(_ parser: XMLParser, parseErrorOccurred parseError: Error) { error = parseError }
    }

    func parseJUnit(_ xml: String, file: StaticString = #filePath, line: UInt = #line) -> JUnitCollector {
        let p = XMLParser(data: Data(xml.utf8))
        let c = JUnitCollector()
        p.delegate = c
        let ok = p.parse()
        XCTAssertTrue(ok, "XML must parse: \(String(describing: c.error ?? p.parserError))\n\(xml)", file: file, line: line)
        return c
    }

    func testJUnitCountsNamesAndElements() {
        let report = Self.sample()
        let xml = Reporter.render(report, format: .junit, color: true)
        XCTAssertTrue(xml.hasPrefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"))
        let c = parseJUnit(xml)

        XCTAssertEqual(c.suites.count, 1)
        let s = c.suites.first ?? [:]
        XCTAssertEqual(s["name"], "vfio-exerciser 6.12.57+deb13-amd64")
        // 6 cases + the run-incidents case; 3 failing cases + incidents; skip + xfail are skipped.
        XCTAssertEqual(s["tests"], "7")
        XCTAssertEqual(s["failures"], "4")
        XCTAssertEqual(s["skipped"], "2")
        XCTAssertEqual(s["time"], "12.500000")
        XCTAssertEqual(c.suitesRoot?["tests"], "7")
        XCTAssertEqual(Int(s["tests"] ?? ""), c.cases.count, "tests attribute equals testcase elements")
        XCTAssertEqual(Int(s["failures"] ?? ""), c.cases.filter { $0.failure != nil }.count)
        XCTAssertEqual(Int(s["skipped"] ?? ""), c.cases.filter { $0.skipped != nil }.count)
        XCTAssertEqual(c.properties["kernel"], "6.12.57+deb13-amd64")
        XCTAssertEqual(c.properties["device"], "0000:00:04.0")

        XCTAssertEqual(c.cases.map(\.name), report.results.map(\.record.id) + ["run-incidents"])
        XCTAssertEqual(c.cases.map(\.classname), ["type1", "type1", "type1v2", "type1", "type1", "type1", "vfio-exerciser"])

        // time = map + unmap in seconds.
        XCTAssertEqual(c.cases[0].time, "0.000019")  // 12345 + 6789 ns = 19.134 µs
        XCTAssertEqual(c.cases[1].time, "0.000001")  // 900 ns
        XCTAssertEqual(c.cases[2].time, "0.000000")

        XCTAssertNil(c.cases[0].failure); XCTAssertNil(c.cases[0].skipped)
        XCTAssertEqual(c.cases[1].failure?["message"], "got EINVAL, expected EFAULT")
        XCTAssertNil(c.cases[1].skipped)
        XCTAssertEqual(c.cases[2].skipped?["message"], "no 1G pages")
        XCTAssertNil(c.cases[2].failure)
        let xf = c.cases[3].skipped?["message"] ?? ""
        XCTAssertTrue(xf.contains("known kernel bug"), xf)
        XCTAssertTrue(xf.contains("https://bugs.example/1"), xf)
        XCTAssertNil(c.cases[3].failure)
        XCTAssertEqual(c.cases[4].failure?["type"], "lost")
        XCTAssertTrue(c.cases[6].failure?["message"]?.contains("guest kernel oops") == true)
        XCTAssertTrue(c.cases[6].failureText.contains("guest kernel oops after case 4"))

        let out = c.cases[1].systemOut
        XCTAssertTrue(out.contains("outcome: EINVAL"), out)
        XCTAssertTrue(out.contains("expected: EFAULT"), out)
        XCTAssertTrue(out.contains("decided_by: vaddr_get_pfns"), out)
        XCTAssertTrue(c.cases[3].systemOut.contains("property fs: ext4"), c.cases[3].systemOut)
        XCTAssertFalse(xml.contains("\u{1B}"), "colour never applies to XML")
    }

    func testJUnitEscapesHostileStrings() {
        let xml = Reporter.render(Self.sample(), format: .junit, color: false)
        // Raw control characters are not allowed anywhere in XML 1.0.
        XCTAssertFalse(xml.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" }, "raw control char in XML")
        let c = parseJUnit(xml)
        guard c.cases.count == 7 else { return XCTFail("expected 7 testcases, got \(c.cases.count)") }
        let evil = c.cases[5]
        XCTAssertEqual(evil.name, "type1/evil#name\nx", "attribute newline survives as a character reference")
        let msg = evil.failure?["message"] ?? ""
        XCTAssertTrue(msg.hasPrefix("bad <&\"'> "), msg)
        XCTAssertTrue(msg.contains("ctl"), msg)
        XCTAssertTrue(msg.contains("\\x01"), "control char written visibly: \(msg)")
        XCTAssertFalse(msg.contains("\u{01}"))
        XCTAssertTrue(msg.contains("newline # hash"), msg)
        XCTAssertTrue(evil.failureText.contains("bad <&\"'>"), evil.failureText)

        // The escaping primitive itself.
        XCTAssertEqual(XML.escape("<&\"'>", attribute: true), "&lt;&amp;&quot;&apos;&gt;")
        XCTAssertEqual(XML.escape("a\tb\nc", attribute: true), "a&#9;b&#10;c")
        XCTAssertEqual(XML.escape("a\tb\nc", attribute: false), "a\tb\nc")
        XCTAssertEqual(XML.escape("x\u{00}y\u{1F}", attribute: false), "x\\x00y\\x1f")
    }

    func testJUnitWithoutIncidentsHasNoIncidentCase() {
        let c = parseJUnit(Reporter.render(Self.sample(incidents: []), format: .junit, color: false))
        XCTAssertEqual(c.cases.count, 6)
        XCTAssertFalse(c.cases.contains { $0.name == "run-incidents" })
        XCTAssertEqual(c.suites.first?["failures"], "3")
    }

    // MARK: JSON

    func testJSONRoundTrip() throws {
        for report in [Self.sample(), Self.sample(incidents: []),
                       RunReport(header: RunHeader(tool: "t", kernelRelease: "k", device: "d", plan: []), results: [])] {
            let text = Reporter.render(report, format: .json, color: true)
            let back = try JSONDecoder().decode(RunReport.self, from: Data(text.utf8))
            XCTAssertEqual(back, report)
            XCTAssertEqual(try Reporter.decodeJSON(Data(text.utf8)), report)
            XCTAssertFalse(text.contains("\u{1B}"))
        }
        let text = Reporter.render(Self.sample(), format: .json, color: false)
        let obj = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        XCTAssertEqual(obj?["schema"] as? Int, RunReport.schemaVersion)
        // Pretty printed, keys sorted.
        XCTAssertTrue(text.contains("\n  \"elapsedSeconds\""), text)
        let top = text.split(separator: "\n").filter { $0.hasPrefix("  \"") }.map { $0.split(separator: "\"")[1] }
        XCTAssertEqual(top, ["elapsedSeconds", "header", "incidents", "results", "schema"])
    }

    /// The same report must render the same bytes whatever order its dictionaries iterate in —
    /// which differs between processes (per-process hash seed) and, within one, with a
    /// dictionary's insertion history and capacity. Rendering one report twice could not tell.
    func testDeterministicWhateverTheDictionaryOrder() {
        let keys = (0..<24).map { "property-\($0)" } + ["huge_page", "data", "fs"]
        func props(_ order: [String], capacity: Int) -> [String: String] {
            var d = [String: String](minimumCapacity: capacity)
            for k in order { d[k] = "value of \(k)" }
            return d
        }
        let a = props(keys, capacity: 0), b = props(keys.reversed(), capacity: 1024)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(Array(a.keys), Array(b.keys), "both dictionaries iterate alike: this test would prove nothing")
        var r1 = Self.sample(), r2 = Self.sample()
        for i in r1.results.indices {
            r1.results[i].record.properties = props(keys, capacity: 0)
            r2.results[i].record.properties = props(keys.reversed(), capacity: 1024)
        }
        for f in ReportFormat.allCases {
            for color in [false, true] {
                XCTAssertEqual(Reporter.render(r1, format: f, color: color), Reporter.render(r2, format: f, color: color), "\(f)")
            }
        }
        XCTAssertEqual(Set(ReportFormat.allCases.map(\.rawValue)), ["table", "json", "ktap", "junit"])
    }

    // MARK: Table

    static func stripANSI(_ s: String) -> String {
        s.replacingOccurrences(of: "\u{1B}\\[[0-9;]*m", with: "", options: .regularExpression)
    }

    /// The block from the header row to the last data row.
    func tableBlock(_ text: String) -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let start = lines.firstIndex(where: { Self.stripANSI($0).hasPrefix("VERDICT") }) else {
            XCTFail("no header row:\n\(text)")
            return []
        }
        return Array(lines[start...].prefix(while: { !$0.isEmpty }))
    }

    /// Column ranges from the dashes row ("----  ---  ..."), in characters.
    func columnRanges(_ dashes: String) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start: Int?
        for (i, ch) in dashes.enumerated() {
            if ch == "-" { if start == nil { start = i } }
            else if let s = start { ranges.append(s..<i); start = nil }
        }
        if let s = start { ranges.append(s..<dashes.count) }
        return ranges
    }

    func cells(_ line: String, _ ranges: [Range<Int>]) -> [String] {
        let chars = Array(line)
        return ranges.map { r in String(chars[r.clamped(to: 0..<chars.count)]).trimmingCharacters(in: .whitespaces) }
    }

    static let tableTitles = ["VERDICT", "ID", "BACKEND", "KIND", "PHASE", "SIZE", "FLAGS", "IOVA", "OUTCOME", "EXPECTED",
                              "MAP µs", "UNMAP µs", "UNMAPPED", "ACCT", "IOMMU PG", "DATA", "CASE ms", "PROPERTIES", "REASON"]

    func checkAligned(_ text: String, color: Bool, report: RunReport = ReportTests.sample(),
                      file: StaticString = #filePath, line: UInt = #line) {
        let block = tableBlock(text).map(Self.stripANSI)
        XCTAssertEqual(block.count, 2 + report.results.count, "header, dashes, one row per case", file: file, line: line)
        guard block.count >= 2 else { return }
        let width = block[0].count
        for l in block { XCTAssertEqual(l.count, width, "visible width of \"\(l)\"", file: file, line: line) }

        let ranges = columnRanges(block[1])
        XCTAssertEqual(ranges.count, 19, "19 columns", file: file, line: line)
        // Between columns there is only blank space, in every row.
        for l in block {
            let chars = Array(l)
            for (a, b) in zip(ranges, ranges.dropFirst()) {
                XCTAssertTrue(chars[a.upperBound..<b.lowerBound].allSatisfy { $0 == " " }, "gap in \"\(l)\"", file: file, line: line)
            }
        }
        let head = cells(block[0], ranges)
        XCTAssertEqual(head, Self.tableTitles, file: file, line: line)
        let rows = block.dropFirst(2).map { cells($0, ranges) }
        XCTAssertEqual(rows.map { $0[0] }, ["PASS", "FAIL", "SKIP", "XFAIL", "FAIL", "FAIL"], file: file, line: line)
        XCTAssertEqual(rows.map { $0[1] }.prefix(5), report.results.map(\.record.id).prefix(5), file: file, line: line)
        guard rows.count == 6 else { return }
        // The data summary has its own column, so PROPERTIES no longer shows data=.
        XCTAssertEqual(rows[0], ["PASS", "type1/anon-private/device/rw", "type1", "anon-private", "device", "64K", "rw",
                                 "0x100000", "ok", "ok", "12.3", "6.8", "64K", "64K", "4K", "ok", "-", "huge_page=no", "-"],
                       file: file, line: line)
        XCTAssertEqual(rows[1][8], "EINVAL", file: file, line: line)
        XCTAssertEqual(rows[1][9], "EFAULT", file: file, line: line)
        XCTAssertEqual(rows[1][11], "-", file: file, line: line)
        XCTAssertEqual(rows[1][18], "got EINVAL, expected EFAULT", file: file, line: line)
        XCTAssertEqual(rows[2][8], "skip", file: file, line: line)
        XCTAssertEqual(rows[2][18], "no 1G pages", file: file, line: line)
        XCTAssertEqual(rows[3][17], "a=b,fs=ext4", "properties sorted by key", file: file, line: line)
        XCTAssertEqual(rows[4][8], "lost", file: file, line: line)
        // ACCT, IOMMU PG, DATA, CASE ms for every row.
        XCTAssertEqual(rows.map { $0[13] }, ["64K", "-", "-", "2M", "-", "-4K"], "ACCT", file: file, line: line)
        XCTAssertEqual(rows.map { $0[14] }, ["4K", "-", "-", "2M", "-", "1G"], "IOMMU PG", file: file, line: line)
        XCTAssertEqual(rows.map { $0[15] }, ["ok", "-", "-", "n/a", "-", "MISMATCH"], "DATA", file: file, line: line)
        XCTAssertEqual(rows.map { $0[16] }, ["-", "-", "-", "2345.7", "-", "-"], "CASE ms", file: file, line: line)
        XCTAssertEqual(rows[4][17], "cleanup_unmapped=\(Self.cleanupUnmapped)", file: file, line: line)
        XCTAssertEqual(rows[5][17], "-", "data is the only property: nothing left for PROPERTIES", file: file, line: line)
        XCTAssertTrue(rows[5][1].hasPrefix("type1/evil#name x"), "newline in id flattened: \(rows[5][1])", file: file, line: line)
        // Right-aligned numbers end at the column's right edge.
        let chars = Array(block[2])
        XCTAssertEqual(chars[ranges[10].upperBound - 1], "3", file: file, line: line)
        let xfailRow = Array(block[5])
        XCTAssertEqual(String(xfailRow[ranges[13]]).trimmingCharacters(in: .whitespaces), "2M", file: file, line: line)
        XCTAssertEqual(xfailRow[ranges[13].upperBound - 1], "M", "ACCT right-aligned", file: file, line: line)
        XCTAssertEqual(xfailRow[ranges[16].upperBound - 1], "7", "CASE ms right-aligned", file: file, line: line)
        XCTAssertEqual(xfailRow[ranges[14].lowerBound], "2", "IOMMU PG left-aligned", file: file, line: line)
        XCTAssertEqual(xfailRow[ranges[15].lowerBound], "n", "DATA left-aligned", file: file, line: line)
    }

    func testTableAlignedWithoutColor() {
        let text = Reporter.render(Self.sample(), format: .table, color: false)
        XCTAssertFalse(text.utf8.contains(0x1B), "no ESC byte without colour (even from a hostile reason)")
        checkAligned(text, color: false)
        XCTAssertTrue(text.hasPrefix("kernel: 6.12.57+deb13-amd64\ndevice: 0000:00:04.0\ntool:   vfio-exerciser 0.1\n"), text)
        XCTAssertTrue(text.contains("\n1 passed, 3 failed, 1 skipped, 1 xfail\n"), text)
        XCTAssertTrue(text.contains("guest kernel oops after case 4"), text)
        // The hostile ESC is shown, not sent.
        XCTAssertTrue(text.contains("\\x1b[31mesc"), text)
    }

    func testTableAlignedWithColor() {
        let plain = Reporter.render(Self.sample(), format: .table, color: false)
        let colored = Reporter.render(Self.sample(), format: .table, color: true)
        XCTAssertTrue(colored.utf8.contains(0x1B), "colour requested")
        checkAligned(colored, color: true)
        XCTAssertEqual(Self.stripANSI(colored), plain, "colour adds escapes and nothing else")
        // Escapes only on the verdict column: every data row starts with one, nothing else has any.
        let block = tableBlock(colored)
        for row in block.dropFirst(2) {
            XCTAssertTrue(row.hasPrefix("\u{1B}["), row)
            let afterVerdict = row.drop(while: { $0 != " " })
            XCTAssertFalse(afterVerdict.contains("\u{1B}"), "escape outside the verdict column: \(row)")
        }
        XCTAssertFalse(block[0].contains("\u{1B}"))
        let rest = colored.split(separator: "\n").filter { !block.contains(String($0)) }
        XCTAssertFalse(rest.contains { $0.contains("\u{1B}") }, "no colour outside the table")
    }

    func testTableLongReasonIsShortened() {
        var r = Self.sample(incidents: [])
        r.results[1].verdict.reason = String(repeating: "x", count: 500)
        let text = Reporter.render(r, format: .table, color: false)
        let row = tableBlock(text)[3]
        XCTAssertLessThan(row.count, 400, "reason column is short")
        XCTAssertTrue(row.hasSuffix("…") || row.contains("…"), row)
        XCTAssertTrue(text.contains(String(repeating: "x", count: 500)), "full reason listed under Failures")
    }

    // MARK: New per-case fields and hygiene

    /// The "# " lines directly before the result line that starts with `resultPrefix`.
    func ktapBlock(_ lines: [String], _ resultPrefix: String, file: StaticString = #filePath, line: UInt = #line) -> [String] {
        guard let r = lines.firstIndex(where: { $0.hasPrefix(resultPrefix) }) else {
            XCTFail("no result line \(resultPrefix)", file: file, line: line)
            return []
        }
        return Array(lines[..<r].reversed().prefix(while: { $0.hasPrefix("# ") }).reversed())
    }

    func testKTAPCaseDetails() throws {
        let text = Reporter.render(Self.sample(), format: .ktap, color: false)
        let k = try parseKTAP(text)
        XCTAssertEqual(k.plan, 6)
        XCTAssertEqual(k.results.map(\.ok), [true, false, true, true, false, false], "results unchanged by the new diagnostics")
        let lines = text.split(separator: "\n").map(String.init)

        let b1 = ktapBlock(lines, "ok 1 ")
        XCTAssertTrue(b1.contains("# data: ok (data-ring)"), "\(b1)")
        XCTAssertTrue(b1.contains("# accounted: 65536 bytes"), "\(b1)")
        XCTAssertTrue(b1.contains("# iommu page: 4K"), "\(b1)")
        XCTAssertTrue(b1.contains("# check data-ring: ok 16 page(s) read and written via 0x100000"), "\(b1)")
        XCTAssertTrue(b1.contains("# check accounting-restored: ok locked/pinned memory back to its baseline"), "\(b1)")
        XCTAssertTrue(b1.contains("# property huge_page: no"), "\(b1)")
        XCTAssertFalse(b1.contains { $0.hasPrefix("# property data") }, "data is not repeated as a property: \(b1)")
        XCTAssertFalse(b1.contains { $0.hasPrefix("# case time:") }, "no case time recorded: \(b1)")

        // A refused map: its check, and nothing for what was not measured.
        let b2 = ktapBlock(lines, "not ok 2 ")
        XCTAssertTrue(b2.contains("# check refused-map-left-nothing: ok 0 bytes to unmap"), "\(b2)")
        for absent in ["# data:", "# accounted:", "# iommu page:", "# kernel:"] {
            XCTAssertFalse(b2.contains { $0.hasPrefix(absent) }, "\(absent) in \(b2)")
        }

        let b4 = ktapBlock(lines, "ok 4 ")
        XCTAssertTrue(b4.contains("# data: not checkable: device MMIO"), "\(b4)")
        XCTAssertTrue(b4.contains("# accounted: 2097152 bytes"), "\(b4)")
        XCTAssertTrue(b4.contains("# iommu page: 2M"), "\(b4)")
        XCTAssertTrue(b4.contains("# case time: 2345.7 ms"), "\(b4)")

        // The lost case: its kernel log lines, in order, and what clean-up unmapped.
        let b5 = ktapBlock(lines, "not ok 5 ")
        XCTAssertEqual(b5.filter { $0.hasPrefix("# kernel: ") }, ["# kernel: \(Self.warnLine)", "# kernel: Call Trace:"], "\(b5)")
        XCTAssertTrue(b5.contains("# property cleanup_unmapped: \(Self.cleanupUnmapped)"), "\(b5)")

        // The evil case: failed check as a check line, negative accounting, a hostile kernel line made harmless.
        let b6 = ktapBlock(lines, "not ok 6 ")
        XCTAssertTrue(b6.contains("# check readback: FAIL byte 0 was 0xff"), "\(b6)")
        XCTAssertTrue(b6.contains("# failed check: readback: byte 0 was 0xff"), "\(b6)")
        XCTAssertTrue(b6.contains("# data: mismatch"), "\(b6)")
        XCTAssertTrue(b6.contains("# accounted: -4096 bytes"), "\(b6)")
        XCTAssertTrue(b6.contains("# iommu page: 1G"), "\(b6)")
        XCTAssertTrue(b6.contains("# kernel: vfio-pci 0000:00:04.0: iommu fault\\x1b[2J at 0x1000 # not a directive"), "\(b6)")
        XCTAssertFalse(text.contains("\u{1B}"))

        // Without hygiene: one line saying so, and the totals stay last.
        XCTAssertTrue(lines.contains("# hygiene: not checked"), text)
        XCTAssertEqual(lines.last, "# Totals: pass:1 fail:3 xfail:1 xpass:0 skip:1 error:0")
    }

    func testKTAPHygiene() throws {
        // Passing hygiene: each check, the summary, no incident; a clean run still exits 0.
        var clean = Self.sample(incidents: [], hygiene: Self.cleanHygiene)
        clean.results = [clean.results[0]]
        clean.header.plan = [clean.results[0].record.id]
        let ct = Reporter.render(clean, format: .ktap, color: false)
        let ck = try parseKTAP(ct)
        XCTAssertEqual(ck.plan, 1)
        XCTAssertEqual(ck.results.map(\.ok), [true])
        let cl = ct.split(separator: "\n").map(String.init)
        guard let r1 = cl.firstIndex(of: "ok 1 type1/anon-private/device/rw") else { return XCTFail(ct) }
        XCTAssertEqual(Array(cl[(r1 + 1)...]), [
            "# hygiene fds: ok 12 open, as before",
            "# hygiene maps: ok no region or device mapping left",
            "# hygiene locked-memory: ok VmLck 0 → 0 kB, VmPin 0 → 0 kB",
            "# hygiene hugepages: ok free counts as before",
            "# hygiene: ok (fds, maps, locked-memory, hugepages)",
            "# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0",
        ])
        XCTAssertEqual(clean.exitCode, 0)

        // Failing hygiene: FAIL lines, the summary names them, they are incidents and the run fails.
        var dirty = clean
        dirty = RunReport(header: clean.header, results: clean.results, incidents: [], elapsedSeconds: 1, hygiene: Self.dirtyHygiene)
        let dt = Reporter.render(dirty, format: .ktap, color: false)
        let dk = try parseKTAP(dt)
        XCTAssertEqual(dk.results.map(\.ok), [true], "case results are the cases'")
        let dl = dt.split(separator: "\n").map(String.init)
        XCTAssertTrue(dl.contains("# hygiene fds: FAIL leaked: 9 -> /dev/vfio/7"), dt)
        XCTAssertTrue(dl.contains("# hygiene maps: ok no region or device mapping left"), dt)
        XCTAssertTrue(dl.contains("# hygiene hugepages: FAIL hugepages-2048kB free 8 → 7"), dt)
        XCTAssertTrue(dl.contains("# hygiene: FAIL (fds, hugepages)"), dt)
        XCTAssertTrue(dl.contains("# incident: hygiene: fds: leaked: 9 -> /dev/vfio/7"), dt)
        XCTAssertTrue(dl.contains("# incident: hygiene: hugepages: hugepages-2048kB free 8 → 7"), dt)
        XCTAssertEqual(dirty.exitCode, 1, "a failed hygiene check fails the run")
        // Hygiene comes after the last result and before the incidents and totals.
        let iHyg = dl.firstIndex(of: "# hygiene fds: FAIL leaked: 9 -> /dev/vfio/7") ?? -1
        let iRes = dl.firstIndex(of: "ok 1 type1/anon-private/device/rw") ?? Int.max
        let iInc = dl.firstIndex { $0.hasPrefix("# incident: ") } ?? -1
        XCTAssertLessThan(iRes, iHyg)
        XCTAssertLessThan(iHyg, iInc)
        XCTAssertTrue(dl.last?.hasPrefix("# Totals: ") == true)
    }

    func testJUnitCaseDetailsAndTime() {
        var report = Self.sample()
        let xml = Reporter.render(report, format: .junit, color: false)
        XCTAssertFalse(xml.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" }, "raw control char in XML")
        let c = parseJUnit(xml)
        guard c.cases.count == 7 else { return XCTFail("expected 7 testcases, got \(c.cases.count)") }

        let out0 = c.cases[0].systemOut.split(separator: "\n").map(String.init)
        for want in ["data: ok (data-ring)", "accounted: 65536 bytes", "iommu page: 4K", "case time: -",
                     "map: 12.3 µs", "unmap: 6.8 µs", "property huge_page: no",
                     "check data-ring: passed 16 page(s) read and written via 0x100000",
                     "check accounting-restored: passed locked/pinned memory back to its baseline"] {
            XCTAssertTrue(out0.contains(want), "\(want) in \(out0)")
        }
        XCTAssertFalse(out0.contains { $0.hasPrefix("property data") }, "data not repeated as a property: \(out0)")
        XCTAssertFalse(out0.contains { $0.hasPrefix("kernel: ") }, "no kernel log for this case: \(out0)")

        let out1 = c.cases[1].systemOut.split(separator: "\n").map(String.init)
        for want in ["data: -", "accounted: -", "iommu page: -", "check refused-map-left-nothing: passed 0 bytes to unmap"] {
            XCTAssertTrue(out1.contains(want), "\(want) in \(out1)")
        }

        // The whole-case time is the testcase time when recorded (else map + unmap, as before).
        XCTAssertEqual(c.cases[3].time, "2.345679")
        let out3 = c.cases[3].systemOut.split(separator: "\n").map(String.init)
        for want in ["case time: 2.345679 s", "data: not checkable: device MMIO", "accounted: 2097152 bytes", "iommu page: 2M"] {
            XCTAssertTrue(out3.contains(want), "\(want) in \(out3)")
        }
        XCTAssertEqual(c.cases[0].time, "0.000019")

        let out4 = c.cases[4].systemOut.split(separator: "\n").map(String.init)
        XCTAssertEqual(out4.filter { $0.hasPrefix("kernel: ") }, ["kernel: \(Self.warnLine)", "kernel: Call Trace:"], "\(out4)")
        XCTAssertTrue(out4.contains("property cleanup_unmapped: \(Self.cleanupUnmapped)"), "\(out4)")

        let out5 = c.cases[5].systemOut.split(separator: "\n").map(String.init)
        XCTAssertTrue(out5.contains("check readback: FAILED byte 0 was 0xff"), "\(out5)")
        XCTAssertTrue(out5.contains("data: mismatch"), "\(out5)")
        XCTAssertTrue(out5.contains("accounted: -4096 bytes"), "\(out5)")
        XCTAssertTrue(out5.contains("kernel: vfio-pci 0000:00:04.0: iommu fault\\x1b[2J at 0x1000 # not a directive"), "\(out5)")

        // Suite time without an elapsed time: the sum of the testcase times.
        report.elapsedSeconds = nil
        let s = parseJUnit(Reporter.render(report, format: .junit, color: false)).suites.first ?? [:]
        // 19134 + 900 + 0 + 2345678901 + 0 + 19134 ns
        XCTAssertEqual(s["time"], "2.345718")
    }

    func testJUnitHygiene() {
        // Failing hygiene and no other incident: run-hygiene fails, no run-incidents for the same thing.
        let dirty = Self.sample(incidents: [], hygiene: Self.dirtyHygiene)
        XCTAssertEqual(dirty.incidents.count, 2, "RunReport records failed hygiene as incidents")
        let c = parseJUnit(Reporter.render(dirty, format: .junit, color: false))
        XCTAssertEqual(c.cases.map(\.name), dirty.results.map(\.record.id) + ["run-hygiene"])
        guard let h = c.cases.last, h.name == "run-hygiene" else { return XCTFail("no run-hygiene") }
        XCTAssertEqual(h.classname, "vfio-exerciser")
        XCTAssertEqual(h.failure?["type"], "hygiene")
        let msg = h.failure?["message"] ?? ""
        XCTAssertTrue(msg.contains("2 of 4"), msg)
        XCTAssertTrue(msg.contains("fds") && msg.contains("hugepages"), msg)
        XCTAssertFalse(msg.contains("maps"), "only failing checks named: \(msg)")
        XCTAssertTrue(h.failureText.contains("fds: leaked: 9 -> /dev/vfio/7"), h.failureText)
        XCTAssertTrue(h.failureText.contains("hugepages: hugepages-2048kB free 8 → 7"), h.failureText)
        XCTAssertTrue(h.systemOut.contains("check maps: passed no region or device mapping left"), h.systemOut)
        XCTAssertTrue(h.systemOut.contains("check fds: FAILED leaked: 9 -> /dev/vfio/7"), h.systemOut)
        let s = c.suites.first ?? [:]
        XCTAssertEqual(s["tests"], "7")
        XCTAssertEqual(s["failures"], "4", "3 failing cases + run-hygiene")
        XCTAssertEqual(Int(s["tests"] ?? ""), c.cases.count)
        XCTAssertEqual(Int(s["failures"] ?? ""), c.cases.filter { $0.failure != nil }.count)
        XCTAssertEqual(c.suitesRoot?["failures"], "4")

        // Failing hygiene plus another incident: both testcases fail, the incident case holds only the other one.
        let both = parseJUnit(Reporter.render(Self.sample(hygiene: Self.dirtyHygiene), format: .junit, color: false))
        XCTAssertEqual(both.cases.suffix(2).map(\.name), ["run-hygiene", "run-incidents"])
        XCTAssertNotNil(both.cases.last?.failure)
        XCTAssertEqual(both.cases.last?.failureText, "guest kernel oops after case 4")
        XCTAssertEqual(both.suites.first?["failures"], "5")
        XCTAssertEqual(both.suites.first?["tests"], "8")

        // Passing hygiene: a passing run-hygiene testcase with its checks.
        let clean = parseJUnit(Reporter.render(Self.sample(incidents: [], hygiene: Self.cleanHygiene), format: .junit, color: false))
        guard let ch = clean.cases.last, ch.name == "run-hygiene" else { return XCTFail("no run-hygiene") }
        XCTAssertNil(ch.failure)
        XCTAssertNil(ch.skipped)
        XCTAssertTrue(ch.systemOut.contains("check locked-memory: passed VmLck 0 → 0 kB, VmPin 0 → 0 kB"), ch.systemOut)
        XCTAssertEqual(clean.suites.first?["tests"], "7")
        XCTAssertEqual(clean.suites.first?["failures"], "3")
    }

    func testJSONRoundTripNewFields() throws {
        for hygiene in [Self.dirtyHygiene, Self.cleanHygiene] {
            let report = Self.sample(hygiene: hygiene)
            let text = Reporter.render(report, format: .json, color: false)
            let back = try Reporter.decodeJSON(Data(text.utf8))
            XCTAssertEqual(back, report)
            XCTAssertEqual(back.hygiene, hygiene)
            XCTAssertEqual(back.incidents, report.incidents, "decoding does not derive hygiene incidents a second time")
            XCTAssertEqual(back.results[0].record.accountedBytes, 65536)
            XCTAssertEqual(back.results[5].record.accountedBytes, -4096)
            XCTAssertEqual(back.results[0].record.iommuPageSize, "4K")
            XCTAssertEqual(back.results[3].record.caseNanos, 2_345_678_901)
            XCTAssertEqual(back.results[4].record.kernelLog, [Self.warnLine, "Call Trace:"])
            XCTAssertEqual(back.results[5].record.kernelLog, [Self.hostileKernelLine])
            XCTAssertEqual(back.results[3].record.properties["data"], "not checkable: device MMIO")
            XCTAssertEqual(back.results[4].record.properties["cleanup_unmapped"], Self.cleanupUnmapped)
            XCTAssertEqual(back.results[0].record.checks, report.results[0].record.checks)
            XCTAssertEqual(Reporter.render(back, format: .json, color: false), text, "stable through a round trip")
            // Every other format renders the decoded report identically.
            for f in ReportFormat.allCases {
                XCTAssertEqual(Reporter.render(back, format: f, color: false), Reporter.render(report, format: f, color: false), "\(f)")
            }
            XCTAssertFalse(text.contains("\u{1B}"))

            let obj = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
            XCTAssertEqual((obj?["hygiene"] as? [[String: Any]])?.count, 4)
            let top = text.split(separator: "\n").filter { $0.hasPrefix("  \"") }.map { $0.split(separator: "\"")[1] }
            XCTAssertEqual(top, ["elapsedSeconds", "header", "hygiene", "incidents", "results", "schema"])
            let rec3 = ((obj?["results"] as? [[String: Any]])?[3]["record"]) as? [String: Any]
            XCTAssertEqual(rec3?["caseNanos"] as? Int, 2_345_678_901)
            XCTAssertEqual(rec3?["accountedBytes"] as? Int, 2 << 20)
            XCTAssertEqual(rec3?["iommuPageSize"] as? String, "2M")
            XCTAssertEqual((rec3?["kernelLog"] as? [String])?.count, 0)
        }
    }

    func testTableNewSections() {
        // No hygiene recorded: said so. Kernel log only for cases that have lines; data-not-checkable reasons.
        let text = Reporter.render(Self.sample(), format: .table, color: false)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertTrue(lines.contains("hygiene: not checked"), text)
        guard let k = lines.firstIndex(of: "Kernel log:") else { return XCTFail("no Kernel log section:\n\(text)") }
        let section = Array(lines[(k + 1)...].prefix(while: { !$0.isEmpty }))
        XCTAssertEqual(section, [
            "  type1/bar/device/rw:",
            "    \(Self.warnLine)",
            "    Call Trace:",
            "  type1/evil#name x:",
            "    vfio-pci 0000:00:04.0: iommu fault\\x1b[2J at 0x1000 # not a directive",
        ])
        guard let d = lines.firstIndex(of: "Data not checkable:") else { return XCTFail("no data section:\n\(text)") }
        XCTAssertEqual(lines[d + 1], "  device MMIO: 1 case")
        XCTAssertFalse(text.contains("Failed checks"), "every failed check is in its case's reason")

        // All hygiene passed: one line naming the checks; alignment unchanged.
        let clean = Self.sample(hygiene: Self.cleanHygiene)
        let ct = Reporter.render(clean, format: .table, color: false)
        XCTAssertTrue(ct.split(separator: "\n").contains("hygiene: ok (fds, maps, locked-memory, hugepages)"), ct)
        checkAligned(ct, color: false, report: clean)

        // Failing hygiene: each failing check, once (not again under Run incidents), and still aligned in colour.
        let dirty = Self.sample(hygiene: Self.dirtyHygiene)
        let dt = Reporter.render(dirty, format: .table, color: true)
        checkAligned(dt, color: true, report: dirty)
        let dl = dt.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let h = dl.firstIndex(of: "hygiene: FAIL (fds, hugepages)") else { return XCTFail("no hygiene line:\n\(dt)") }
        XCTAssertEqual(Array(dl[(h + 1)...(h + 2)]), ["  fds: leaked: 9 -> /dev/vfio/7", "  hugepages: hugepages-2048kB free 8 → 7"])
        XCTAssertEqual(dt.components(separatedBy: "leaked: 9 -> /dev/vfio/7").count, 2, "listed once:\n\(dt)")
        guard let ri = dl.firstIndex(of: "Run incidents:") else { return XCTFail("no incidents:\n\(dt)") }
        XCTAssertEqual(Array(dl[(ri + 1)...].prefix(while: { !$0.isEmpty })), ["  guest kernel oops after case 4"])
        let colorRest = dt.split(separator: "\n").filter { !tableBlock(dt).contains(String($0)) }
        XCTAssertFalse(colorRest.contains { $0.contains("\u{1B}") }, "no colour outside the table")

        // Hygiene is the only incident: no Run incidents section at all.
        let only = Reporter.render(Self.sample(incidents: [], hygiene: Self.dirtyHygiene), format: .table, color: false)
        XCTAssertFalse(only.contains("Run incidents:"), only)
        XCTAssertTrue(only.contains("hygiene: FAIL (fds, hugepages)"), only)
    }

    func testTableListsFailedChecksTheReasonLeavesOut() {
        var r = Self.sample(incidents: [])
        // A lost case whose clean-up failed: the verdict names the crash, not the check.
        r.results[4].record.checks = [Check("window-cleanup", false, "UNMAP_DMA of the case's window: EBUSY")]
        // A (hypothetical) passing verdict with a failed check: still shown.
        r.results[0].record.checks.append(Check("data-read", false, "page +0x0: byte 3 was 0x00"))
        let text = Reporter.render(r, format: .table, color: false)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let f = lines.firstIndex(where: { $0.hasPrefix("  type1/bar/device/rw: case did not finish") }) else {
            return XCTFail("lost case not under Failures:\n\(text)")
        }
        XCTAssertEqual(lines[f + 1], "    check window-cleanup: FAIL UNMAP_DMA of the case's window: EBUSY")
        // The evil case's reason does not mention its failed check: listed under it.
        guard let e = lines.firstIndex(where: { $0.hasPrefix("  type1/evil#name x: bad") }) else { return XCTFail(text) }
        XCTAssertEqual(lines[e + 1], "    check readback: FAIL byte 0 was 0xff")
        // A failed check the reason already spells out ("name: detail", as the judge words it) is not repeated.
        r.results[1].record.checks = [Check("unmap", false, "VFIO_IOMMU_UNMAP_DMA: EINVAL")]
        r.results[1].verdict.reason = "got EINVAL, expected EFAULT; unmap: VFIO_IOMMU_UNMAP_DMA: EINVAL"
        let again = Reporter.render(r, format: .table, color: false)
        XCTAssertFalse(again.contains("check unmap: FAIL"), again)
        XCTAssertTrue(again.contains("  type1/hole/device/rw: got EINVAL, expected EFAULT; unmap: VFIO_IOMMU_UNMAP_DMA: EINVAL"), again)
        XCTAssertTrue(lines.contains("Failed checks (in cases not failed):"), text)
        XCTAssertTrue(lines.contains("  type1/anon-private/device/rw: check data-read: FAIL page +0x0: byte 3 was 0x00"), text)
        checkAligned(text, color: false, report: r)
    }

    func testFormattingHelpers() {
        XCTAssertEqual(ReportText.flags(["read", "write"]), "rw")
        XCTAssertEqual(ReportText.flags(["read"]), "r")
        XCTAssertEqual(ReportText.flags(["write"]), "w")
        XCTAssertEqual(ReportText.flags([]), "-")
        XCTAssertEqual(ReportText.micros(12_345), "12.3")
        XCTAssertEqual(ReportText.micros(12_350), "12.4")
        XCTAssertEqual(ReportText.micros(nil), "-")
        XCTAssertEqual(ReportText.micros(.max).isEmpty, false)
        XCTAssertEqual(ReportText.seconds(nanos: 1_500_000_000), "1.500000")
        XCTAssertEqual(ReportText.seconds(nanos: 0), "0.000000")
        XCTAssertNil(ReportText.seconds(.nan))
        XCTAssertEqual(ReportText.hex(0xdead_b000), "0xdeadb000")
        XCTAssertEqual(ReportText.millis(2_345_678_901), "2345.7")
        XCTAssertEqual(ReportText.millis(49_999), "0.0")
        XCTAssertEqual(ReportText.millis(50_000), "0.1")
        XCTAssertEqual(ReportText.millis(nil), "-")
        XCTAssertEqual(ReportText.dataWord("ok (data-ring)"), "ok")
        XCTAssertEqual(ReportText.dataWord("ok (data-read, data-ring)"), "ok")
        XCTAssertEqual(ReportText.dataWord("mismatch"), "MISMATCH")
        XCTAssertEqual(ReportText.dataWord("not checkable: device MMIO"), "n/a")
        XCTAssertEqual(ReportText.dataWord(nil), "-")
        XCTAssertEqual(ReportText.notCheckableReason("not checkable: device MMIO"), "device MMIO")
        XCTAssertNil(ReportText.notCheckableReason("ok (data-ring)"))
        XCTAssertEqual(ReportText.signedSize(-4096), "-4K")
        XCTAssertEqual(ReportText.signedSize(0), "0")
        XCTAssertEqual(ReportText.signedSize(2 << 20), "2M")
        XCTAssertEqual(ReportText.signedSize(.min), "-" + formatSize(UInt64(1) << 63))
    }
}
