import Foundation

/// The guests `vm` boots: each kernel once plainly and once per matrix boot, as the matrix asks.
public struct GuestRun: Sendable, Equatable {
    /// The kernel as given (debian:6.1).
    public var kernel: String
    /// "debian:6.1" or "debian:6.1+movable": progress lines and the summary.
    public var label: String
    /// The directory under --out: "debian-6.1", "debian-6.1+movable" (the matrix's column name).
    public var directory: String
    /// Parameters this boot appends to the command line.
    public var append: [String]
    /// The kinds the guest runs (nil: whatever the other options say).
    public var kinds: [CaseKind]?
}

public enum BootPlan {
    /// The plain boot's name for --boot.
    public static let plain = "plain"

    /// Kernels × boots, kernel-major. `selected` (--boot) narrows to those names, `plain` included;
    /// `kinds` (--kind) narrows each boot's kinds, and a boot left with none is not booted.
    public static func runs(kernels: [String], boots: [BootVariant], selected: [String], kinds: [CaseKind]) -> [GuestRun] {
        let keep = { (name: String) in selected.isEmpty || selected.contains(name) }
        var out: [GuestRun] = []
        for k in kernels {
            let dir = k.replacingOccurrences(of: ":", with: "-")
            if keep(plain) { out.append(GuestRun(kernel: k, label: k, directory: dir, append: [], kinds: nil)) }
            for b in boots where keep(b.name) {
                let ks = kinds.isEmpty ? b.kinds : b.kinds.filter(kinds.contains)
                if ks.isEmpty { continue }
                out.append(GuestRun(kernel: k, label: k + "+" + b.name, directory: dir + "+" + b.name, append: b.append, kinds: ks))
            }
        }
        return out
    }

    /// An unknown --boot name, as the one line of exit 2 (nil: all known).
    public static func unknown(_ selected: [String], boots: [BootVariant]) -> String? {
        let known = [plain] + boots.map(\.name)
        guard let bad = selected.first(where: { !known.contains($0) }) else { return nil }
        return "--boot \(bad): no such boot (matrix.yaml has: \(known.joined(separator: ", ")))"
    }
}
