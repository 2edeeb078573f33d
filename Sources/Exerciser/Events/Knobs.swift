import Foundation

/// System settings a case may change (module parameters, sysfs knobs), read by the parent before
/// the case's child runs and put back by the parent if the child left them changed (crashed,
/// killed): nothing the tool touches outlives the case.
enum CaseKnobs {
    static func paths(for c: PlannedCase) -> [String] {
        if c.kind == .dmaEntryLimit { return [DMAEntryLimit.param] }
        if c.event == .ksmMerge { return KSM.knobs }
        return []
    }

    static func snapshot(_ c: PlannedCase) -> [(path: String, value: String)] {
        snapshot(paths(for: c))
    }

    static func snapshot(_ paths: [String]) -> [(path: String, value: String)] {
        paths.compactMap { p in read(p).map { (p, $0) } }
    }

    static func read(_ path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8)).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    /// As `echo value > path` does it (O_TRUNC: a no-op on sysfs, needed on a plain file).
    static func write(_ path: String, _ value: String) -> Bool {
        let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
        defer { if fd >= 0 { close(fd) } }
        return fd >= 0 && value.withCString { Foundation.write(fd, $0, strlen($0)) } == value.utf8.count
    }

    /// A failing check for each knob the case left changed (and put back), in the snapshot's order.
    static func restore(_ snap: [(path: String, value: String)]) -> [Check] {
        putBack(snap).map { k in
            Check("knob-left-changed", false, "\(k.path) was left at \(k.was ?? "?"); \(k.ok ? "restored" : "could NOT restore") \(k.value)")
        }
    }

    /// Writes back, in order, each knob that differs from the snapshot; what each was and whether
    /// it now reads the saved value.
    static func putBack(_ snap: [(path: String, value: String)]) -> [(path: String, value: String, was: String?, ok: Bool)] {
        snap.compactMap { k in
            let now = read(k.path)
            guard now != k.value else { return nil }
            return (k.path, k.value, now, write(k.path, k.value) && read(k.path) == k.value)
        }
    }
}
