import Foundation

/// The kernel command-line parameters a run was booted with, by name ("movablecore" for
/// movablecore=1G): what a config row's `boot:` is matched against.
public struct BootParams: Sendable, Equatable {
    public var names: Set<String>
    public init(_ names: Set<String> = []) { self.names = names }
    public init(cmdline: String) {
        names = Set(cmdline.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
            .map { String($0.prefix { $0 != "=" }) }.filter { !$0.isEmpty })
    }
    public static let none = BootParams()
    /// This machine's, from /proc/cmdline (none where it cannot be read).
    public static func running() -> String? {
        (try? String(contentsOfFile: "/proc/cmdline", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether a row's `boot:` holds: every parameter it names was given (a row without one
    /// holds on any boot).
    public func satisfies(_ wanted: [String]?) -> Bool { wanted.map { names.isSuperset(of: $0) } ?? true }
}

/// Rows that match a case: those naming boot parameters the run has, if any match, else the
/// rest. A boot row says what changes under that boot; every other case keeps its plain row.
func preferringBoot<R>(_ rows: [R], _ boot: (R) -> [String]?) -> [R] {
    let specific = rows.filter { boot($0) != nil }
    return specific.isEmpty ? rows : specific
}

/// A `boot:` field: kernel parameter names (no values, no spaces); nil when absent.
func parseBoot(_ names: [String]?, _ loc: String) throws(ConfigError) -> [String]? {
    guard let names else { return nil }
    guard !names.isEmpty else { throw ConfigError("\(loc): \"boot\" must name at least one kernel parameter") }
    for n in names where n.isEmpty || n.contains(where: { $0 == "=" || $0 == " " }) {
        throw ConfigError("\(loc): boot \"\(n)\" must be a kernel parameter's name, such as movablecore")
    }
    return names
}

/// One more boot of every kernel (matrix.yaml `boots:`): its parameters appended to the command
/// line, and the kinds (with their events) that run under it.
public struct BootVariant: Sendable, Equatable {
    public var name: String
    public var append: [String]
    public var kinds: [CaseKind]
    public var why: String
}
