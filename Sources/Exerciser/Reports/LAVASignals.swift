import Foundation

/// KTAP (ours or any kselftest's) as LAVA test-case signals, the lines `lava-test-case` echoes:
/// `<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=name RESULT=pass|fail|skip>`. This LAVA (2023.01) has no
/// KTAP parser; the signals need no regex on a console that arrives with "\r\r\n".
public enum LAVASignals {
    public struct Case: Equatable, Sendable {
        public var name: String
        public var result: String
    }

    /// Top-level result lines, in order. ok → pass, not ok → fail, `# SKIP` → skip, `# XFAIL`
    /// (a known bug reproduced, not a failure for kselftest either) → pass. Nested (indented or
    /// "# "-prefixed) lines are subtests' and not counted. Then two cases of the run itself:
    /// `ktap-plan` (the plan's count against the results) and `ktap-incidents` ("# incident:" lines).
    public static func cases(fromKTAP text: String) -> [Case] {
        var out: [Case] = []
        var plan: Int?
        var incidents = 0
        var names = Set<String>()
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            let line = raw.replacingOccurrences(of: "\r", with: "")
            if line.hasPrefix("# incident:") { incidents += 1; continue }
            if plan == nil, line.hasPrefix("1.."), let n = Int(line.dropFirst(3).prefix { $0.isNumber }) { plan = n; continue }
            let failed = line.hasPrefix("not ok ")
            guard failed || line.hasPrefix("ok ") else { continue }
            var rest = Substring(line.dropFirst(failed ? 7 : 3))
            let number = rest.prefix { $0.isNumber }
            guard !number.isEmpty else { continue }
            rest = rest.dropFirst(number.count).drop { $0 == " " }
            var result = failed ? "fail" : "pass"
            var title = String(rest)
            if let hash = rest.range(of: " # ") ?? (rest.hasPrefix("# ") ? rest.range(of: "# ") : nil) {
                let directive = rest[hash.upperBound...].uppercased()
                title = String(rest[..<hash.lowerBound])
                if directive.hasPrefix("SKIP") { result = failed ? "fail" : "skip" }
            }
            var name = caseName(title, number: String(number))
            if names.contains(name) { name += "-\(number)" }
            names.insert(name)
            out.append(Case(name: name, result: result))
        }
        out.append(Case(name: "ktap-plan", result: plan == out.count ? "pass" : "fail"))
        out.append(Case(name: "ktap-incidents", result: incidents == 0 ? "pass" : "fail"))
        return out
    }

    /// A LAVA test case id: letters, digits, "-", "_" and "."; "/" becomes "." and "@" "_", so
    /// "type1v2/bar/BAR0@pre-device" reads "type1v2.bar.BAR0_pre-device". Empty: "case-N".
    public static func caseName(_ s: String, number: String) -> String {
        let mapped = s.trimmingCharacters(in: .whitespaces).unicodeScalars.map { c -> String in
            switch c {
            case "a"..."z", "A"..."Z", "0"..."9", "-", "_", ".": return String(c)
            case "/": return "."
            default: return "_"
            }
        }.joined()
        return mapped.isEmpty ? "case-\(number)" : mapped
    }

    public static func render(_ cases: [Case]) -> String {
        cases.map { "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=\($0.name) RESULT=\($0.result)>\n" }.joined()
    }
}
