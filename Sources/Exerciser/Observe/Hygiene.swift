import Foundation

/// What a run must leave as it found it: file descriptors, mappings of what it built, locked and
/// pinned memory, hugepage pools. Taken before the first case and after the last teardown.
public struct HygieneSnapshot {
    var fds: Set<String>
    var maps: Set<String>
    var accounting: Accounting?
    var hugepagesFree: [String: String]

    /// Mappings that only the run's regions or devices could have made.
    static let ours = ["vfio", "memfd:", "anon_hugepage", "secretmem", ".vfio-exerciser-", "/dev/zero", "/dev/hugepages",
                       "vfio_exerciser_test", "SYSV"]

    public static func take() -> HygieneSnapshot {
        let fdDir = "/proc/self/fd"
        var fds = Set<String>()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: fdDir)) ?? [] {
            // The directory listing itself holds an fd while it runs: it has no target afterwards.
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fdDir)/\(name)") {
                fds.insert("\(name) -> \(target)")
            }
        }
        var maps = Set<String>()
        for line in (readProcFile("/proc/self/maps") ?? "").split(whereSeparator: \.isNewline) where ours.contains(where: { line.contains($0) }) {
            maps.insert(String(line))
        }
        var huge: [String: String] = [:]
        let dir = "/sys/kernel/mm/hugepages"
        for h in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            huge[h] = readProcFile("\(dir)/\(h)/free_hugepages")?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return HygieneSnapshot(fds: fds, maps: maps, accounting: Accounting.read(), hugepagesFree: huge)
    }

    public func compare(after: HygieneSnapshot) -> [Check] {
        // Listing /proc/self/fd opens a directory fd; it shows up in either listing, never both.
        let leaked = after.fds.subtracting(fds).filter { !$0.hasSuffix("/fd") && !$0.contains("/proc/") }
        let left = after.maps.subtracting(maps)
        var checks = [
            Check("fds", leaked.isEmpty, leaked.isEmpty ? "\(after.fds.count) open, as before" : "leaked: " + leaked.sorted().joined(separator: "; ")),
            Check("maps", left.isEmpty, left.isEmpty ? "no region or device mapping left" : "left: " + left.sorted().joined(separator: "; ")),
        ]
        if let a = accounting, let b = after.accounting {
            checks.append(Check("locked-memory", a == b, "VmLck \(a.lockedKB) → \(b.lockedKB) kB, VmPin \(a.pinnedKB) → \(b.pinnedKB) kB"))
        }
        let changed = hugepagesFree.filter { after.hugepagesFree[$0.key] != $0.value }
        checks.append(Check("hugepages", changed.isEmpty, changed.isEmpty ? "free counts as before" :
            changed.map { "\($0.key) free \($0.value) → \(after.hugepagesFree[$0.key] ?? "?")" }.sorted().joined(separator: ", ")))
        return checks
    }
}
