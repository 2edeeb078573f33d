import Foundation

/// System settings a case may change (module parameters, sysfs knobs), read by the parent before
/// the case's child runs and put back by the parent if the child left them changed (crashed,
/// killed): nothing the tool touches outlives the case.
enum CaseKnobs {
    static func paths(for c: PlannedCase) -> [String] {
        c.kind == .dmaEntryLimit ? [DMAEntryLimit.param] : []
    }

    static func snapshot(_ c: PlannedCase) -> [(path: String, value: String)] {
        paths(for: c).compactMap { p in
            (try? String(contentsOfFile: p, encoding: .utf8)).map { (p, $0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
    }

    /// A failing check for each knob the case left changed (and put back).
    static func restore(_ snap: [(path: String, value: String)]) -> [Check] {
        snap.compactMap { k in
            let now = (try? String(contentsOfFile: k.path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            guard now != k.value else { return nil }
            let fd = open(k.path, O_WRONLY | O_CLOEXEC)
            let ok = fd >= 0 && k.value.withCString { write(fd, $0, strlen($0)) } == k.value.utf8.count
            if fd >= 0 { close(fd) }
            return Check("knob-left-changed", false, "\(k.path) was left at \(now ?? "?"); \(ok ? "restored" : "could NOT restore") \(k.value)")
        }
    }
}
