import Foundation
import SystemPackage
import VFIO

/// Where the pages behind an address range are: PFNs from /proc/self/pagemap (root sees them),
/// zones from /proc/zoneinfo.
enum PageInfo {
    struct Zone: Equatable { var name: String; var start: UInt64; var spanned: UInt64 }

    /// PFN of each base page of [addr, addr + pages*4K); nil for a page not present (or no access).
    static func pfns(_ addr: UInt64, pages: Int) -> [UInt64?] {
        let fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return Array(repeating: nil, count: pages) }
        defer { close(fd) }
        var buf = [UInt64](repeating: 0, count: pages)
        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(addr / UInt64(PageSize.base) * 8)) }
        guard n == pages * 8 else { return Array(repeating: nil, count: pages) }
        return buf.map { e in
            let pfn = e & ((1 << 55) - 1)
            return e & (1 << 63) != 0 && pfn != 0 ? pfn : nil
        }
    }

    /// Zones of every node, from /proc/zoneinfo ("Node 0, zone   Normal" … "start_pfn:" … "spanned").
    static func zones(_ text: String? = readProcFile("/proc/zoneinfo")) -> [Zone] {
        var out: [Zone] = []
        var name: String?
        var spanned: UInt64?
        for raw in (text ?? "").split(whereSeparator: \.isNewline) {
            let l = raw.trimmingCharacters(in: .whitespaces)
            if l.hasPrefix("Node "), let r = l.range(of: "zone") {
                name = l[r.upperBound...].trimmingCharacters(in: .whitespaces)
                spanned = nil
            } else if l.hasPrefix("spanned") {
                spanned = l.split(separator: " ").last.flatMap { UInt64($0) }
            } else if l.hasPrefix("start_pfn:"), let n = name, let s = l.split(separator: " ").last.flatMap({ UInt64($0) }) {
                out.append(Zone(name: n, start: s, spanned: spanned ?? 0))
            }
        }
        return out
    }

    static func zone(of pfn: UInt64, in zones: [Zone]) -> String {
        zones.first { $0.spanned > 0 && pfn >= $0.start && pfn < $0.start + $0.spanned }?.name ?? "?"
    }

    /// "pfn 0x1234 (Normal), 16 pages: Normal×16" for a report property.
    static func describe(_ addr: UInt64, pages: Int, zones z: [Zone]) -> (first: UInt64?, text: String) {
        let p = pfns(addr, pages: pages)
        var counts: [String: Int] = [:]
        for x in p { counts[x.map { zone(of: $0, in: z) } ?? "not present", default: 0] += 1 }
        let first = p.first ?? nil
        let head = first.map { "pfn 0x" + String($0, radix: 16) } ?? "pfn ?"
        return (first, head + ", " + counts.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " "))
    }

    /// How many of `a`'s present pages are at another PFN in `b`.
    static func moved(_ a: [UInt64?], _ b: [UInt64?]) -> Int {
        zip(a, b).filter { $0 != nil && $1 != nil && $0 != $1 }.count
    }
}

/// debugfs split_huge_pages (fa6c02315f74, 5.13: "<pid>,0x<vstart>,0x<vend>" splits the THPs
/// mapped there that can be split; split_huge_pages_pid skips a folio with extra references).
enum SplitHugePages {
    static let debugfs = "/sys/kernel/debug"
    static let path = debugfs + "/split_huge_pages"

    /// Makes the file reachable: true when debugfs had to be mounted for it (unmount after).
    static func prepare() -> (available: Bool, mounted: Bool) {
        if access(path, W_OK) == 0 { return (true, false) }
        guard mount("debugfs", debugfs, "debugfs", 0, nil) == 0 else { return (false, false) }
        if access(path, W_OK) == 0 { return (true, true) }
        umount2(debugfs, 0)
        return (false, false)
    }

    static func release(mounted: Bool) { if mounted { umount2(debugfs, 0) } }

    /// "ok" when the kernel took the whole command, else the errno name.
    static func write(_ cmd: String) -> String {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return "open " + Errno(rawValue: errno).symbol }
        defer { close(fd) }
        let n = cmd.withCString { Foundation.write(fd, $0, strlen($0)) }
        return n == cmd.utf8.count ? "ok" : n < 0 ? Errno(rawValue: errno).symbol : "short write \(n) of \(cmd.utf8.count)"
    }
}

extension PageInfo {
    /// How many of the present PFNs carry KPF_THP (bit 22) in /proc/kpageflags; nil without access.
    static func thpPages(_ pfns: [UInt64?]) -> Int? {
        let fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var n = 0
        for pfn in pfns.compactMap({ $0 }) {
            var flags: UInt64 = 0
            guard pread(fd, &flags, 8, off_t(pfn * 8)) == 8 else { return nil }
            if flags & (1 << 22) != 0 { n += 1 }
        }
        return n
    }

    /// The THP state of a range: the PMD mappings of its vma (smaps) and the THP bit of its pages.
    static func thpState(_ addr: UInt64, pages: Int) -> String {
        let sm = Mem.smaps(for: addr)
        // The vma's Size too: MADV_COLLAPSE refuses a vma that cannot hold a PMD.
        let pmd = ["Size", "AnonHugePages", "ShmemPmdMapped", "FilePmdMapped"].compactMap { k in sm[k].map { (k == "Size" ? "vma " : "") + "\(k) \($0)" } }
        let p = pfns(addr, pages: pages)
        let thp = thpPages(p).map { "kpageflags THP on \($0) of \(p.compactMap { $0 }.count) present pages" } ?? "kpageflags unreadable"
        return (pmd.isEmpty ? ["no smaps entry"] : pmd).joined(separator: ", ") + "; " + thp
    }
}
