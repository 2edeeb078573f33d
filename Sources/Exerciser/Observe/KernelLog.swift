import Foundation

/// Reads /dev/kmsg without blocking, so the lines a case made can be attached to it.
/// Opened at the end of the log: only what happens during the run is seen.
final class KernelLog {
    private let fd: Int32
    static let interesting = ["WARNING:", "BUG:", "Bad page", "Oops", "RLIMIT_MEMLOCK", "general protection",
                              "vfio", "iommu", "DMAR", "gup", "pin_user_pages", "Call Trace"]
    /// Lines that fail the case they appear in.
    static let fatal = ["WARNING:", "BUG:", "Bad page", "Oops", "general protection"]

    init?() {
        fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        lseek(fd, 0, SEEK_END)
    }

    deinit { close(fd) }

    /// Every record logged since the last call, as message text.
    func drain() -> [String] {
        var out: [String] = []
        var buf = [UInt8](repeating: 0, count: 8192)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EPIPE { continue }  // records were overwritten: go on with the next
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            if let line = Self.message(buf[0..<n]) { out.append(line) }
        }
        return out
    }

    /// "prio,seq,ts,flags;text\n continuation" → text.
    static func message(_ rec: ArraySlice<UInt8>) -> String? {
        let s = String(decoding: rec, as: UTF8.self)
        guard let semi = s.firstIndex(of: ";") else { return nil }
        let text = s[s.index(after: semi)...].split(separator: "\n", maxSplits: 1).first.map(String.init) ?? ""
        return text
    }

    static func relevant(_ lines: [String]) -> [String] {
        lines.filter { l in interesting.contains { l.localizedCaseInsensitiveContains($0) } }
    }

    static func fatalLines(_ lines: [String]) -> [String] {
        lines.filter { l in fatal.contains { l.contains($0) } }
    }
}

/// The process's locked and pinned memory as the kernel accounts it (/proc/self/status).
struct Accounting: Equatable {
    var lockedKB: Int
    var pinnedKB: Int

    static func read() -> Accounting? {
        guard let text = readProcFile("/proc/self/status") else { return nil }
        var lck: Int?, pin: Int?
        for line in text.split(whereSeparator: \.isNewline) {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard parts.count >= 2 else { continue }
            if parts[0] == "VmLck:" { lck = Int(parts[1]) }
            if parts[0] == "VmPin:" { pin = Int(parts[1]) }
        }
        guard let l = lck, let p = pin else { return nil }
        return Accounting(lockedKB: l, pinnedKB: p)
    }

    /// Bytes charged between two readings (type1 charges locked_vm, iommufd pinned_vm).
    static func delta(_ a: Accounting, _ b: Accounting) -> Int64 {
        Int64((b.lockedKB - a.lockedKB) + (b.pinnedKB - a.pinnedKB)) * 1024
    }
}
