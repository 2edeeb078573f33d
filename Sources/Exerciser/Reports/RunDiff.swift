import Foundation

/// What changed between two runs, case by case: the things a kernel decides (outcome, verdict,
/// bytes unmapped, memory charged, IOMMU page size, properties, the data check), never the
/// timings or the IOVAs the allocator happened to pick.
public struct RunDiff: Equatable, Sendable {
    public struct Change: Equatable, Sendable, Codable {
        public var field: String
        public var before: String
        public var after: String
    }

    public struct CaseChange: Equatable, Sendable, Codable {
        public var id: String
        public var kind: String
        public var backend: String
        /// "changed", "added" (only in B) or "removed" (only in A).
        public var status: String
        public var changes: [Change]
    }

    public var before: String
    public var after: String
    public var cases: [CaseChange]
    public var unchanged: Int

    public var isEmpty: Bool { cases.isEmpty }

    /// The fields compared, each a name and how to read it off a result.
    static let fields: [(String, @Sendable (CaseResult) -> String)] = [
        ("outcome", { $0.record.outcome.description }),
        ("verdict", { $0.verdict.kind.rawValue }),
        ("unmapped", { $0.record.unmappedBytes.map(String.init) ?? "-" }),
        ("accounted", { $0.record.accountedBytes.map(String.init) ?? "-" }),
        ("iommu_page", { $0.record.iommuPageSize ?? "-" }),
        ("size", { String($0.record.size) }),
    ]

    public init(_ a: RunReport, _ b: RunReport) {
        before = a.header.kernelRelease
        after = b.header.kernelRelease
        let byID = Dictionary(b.results.map { ($0.record.id, $0) }, uniquingKeysWith: { x, _ in x })
        let inA = Set(a.results.map(\.record.id))
        var out: [CaseChange] = []
        var same = 0
        for r in a.results {
            guard let s = byID[r.record.id] else {
                out.append(CaseChange(id: r.record.id, kind: r.record.kind, backend: r.record.backend, status: "removed",
                                      changes: [Change(field: "outcome", before: r.record.outcome.description, after: "-")]))
                continue
            }
            var changes: [Change] = []
            for (name, get) in Self.fields where get(r) != get(s) {
                changes.append(Change(field: name, before: get(r), after: get(s)))
            }
            let keys = Set(r.record.properties.keys).union(s.record.properties.keys).sorted()
            for k in keys {
                let (x, y) = (r.record.properties[k].map(Self.stable), s.record.properties[k].map(Self.stable))
                if x != y { changes.append(Change(field: k, before: x ?? "-", after: y ?? "-")) }
            }
            // What each side saw after an event (kind × event cases).
            let obs = { (c: CaseResult) in (c.record.observations ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }
            if obs(r) != obs(s) { changes.append(Change(field: "observations", before: obs(r).ifEmpty("-"), after: obs(s).ifEmpty("-"))) }
            let checks = { (c: CaseResult) in Set(c.record.checks.filter { !$0.passed }.map(\.name)) }
            let (fa, fb) = (checks(r), checks(s))
            if fa != fb {
                changes.append(Change(field: "failed_checks", before: fa.sorted().joined(separator: ",").ifEmpty("-"),
                                      after: fb.sorted().joined(separator: ",").ifEmpty("-")))
            }
            if changes.isEmpty { same += 1 } else {
                out.append(CaseChange(id: r.record.id, kind: r.record.kind, backend: r.record.backend, status: "changed", changes: changes))
            }
        }
        for s in b.results where !inA.contains(s.record.id) {
            out.append(CaseChange(id: s.record.id, kind: s.record.kind, backend: s.record.backend, status: "added",
                                  changes: [Change(field: "outcome", before: "-", after: s.record.outcome.description)]))
        }
        // Grouped by kind, in the order kinds are listed; cases in run order within a kind.
        let order = Dictionary(CaseKind.allCases.enumerated().map { ($1.rawValue, $0) }, uniquingKeysWith: { x, _ in x })
        cases = out.enumerated().sorted { x, y in
            let (kx, ky) = (order[x.element.kind] ?? Int.max, order[y.element.kind] ?? Int.max)
            return kx != ky ? kx < ky : x.offset < y.offset
        }.map(\.element)
        unchanged = same
    }

    /// A property value without what differs from boot to boot: page frame numbers, addresses
    /// and process ids ("pfn 0x14f346, Normal×16" → "Normal×16"; the zone stays).
    static func stable(_ v: String) -> String {
        var out = v.replacingOccurrences(of: #"pfn 0x[0-9a-f]+, "#, with: "", options: .regularExpression)
        out = out.replacingOccurrences(of: #"0x[0-9a-f]{6,}"#, with: "0x…", options: .regularExpression)
        return out.replacingOccurrences(of: #"\bchild [0-9]+"#, with: "child", options: .regularExpression)
    }

    public enum Format: String, CaseIterable, Sendable { case table, json, md }

    public func render(_ format: Format) -> String {
        switch format {
        case .json:
            struct Doc: Codable { var before: String; var after: String; var unchanged: Int; var changed: [CaseChange] }
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            let d = (try? e.encode(Doc(before: before, after: after, unchanged: unchanged, changed: cases))) ?? Data()
            return String(decoding: d, as: UTF8.self) + "\n"
        case .md:
            var s = "| kind | case | field | \(before) | \(after) |\n|---|---|---|---|---|\n"
            for c in cases {
                for ch in c.changes {
                    s += "| \(c.kind) | \(c.id)\(c.status == "changed" ? "" : " (\(c.status))") | \(ch.field) | \(md(ch.before)) | \(md(ch.after)) |\n"
                }
            }
            return s + "\n\(cases.count) case(s) changed, \(unchanged) unchanged\n"
        case .table:
            var s = "\(before) → \(after)\n"
            var kind = ""
            for c in cases {
                if c.kind != kind { kind = c.kind; s += "\n\(kind)\n" }
                s += "  \(c.id)\(c.status == "changed" ? "" : " (\(c.status))")\n"
                for ch in c.changes { s += "      \(ch.field): \(ch.before) → \(ch.after)\n" }
            }
            return s + "\n\(cases.count) case(s) changed, \(unchanged) unchanged\n"
        }
    }

    func md(_ s: String) -> String { s.replacingOccurrences(of: "|", with: "\\|") }
}

extension String {
    func ifEmpty(_ other: String) -> String { isEmpty ? other : self }
}
