import Foundation
import VFIO

/// KSM (CONFIG_KSM, /sys/kernel/mm/ksm) for the ksm-merge event: the knobs it turns, the counters
/// it reads, and the pure parts (page states, the bounded wait) the unit tests drive.
enum KSM {
    static let dir = "/sys/kernel/mm/ksm"
    /// Restored in this order (CaseKnobs.restore): `run` first, so ksmd is back to what it was
    /// before its pace is. `run` is only ever written 1 or its saved value: 2 would unmerge every
    /// process's pages.
    static let required = [dir + "/run", dir + "/pages_to_scan", dir + "/sleep_millisecs"]
    /// `smart_scan` (5e924ff54d08, 6.7) is saved and put back only where it exists.
    static let knobs = required + [dir + "/smart_scan"]
    /// What the event writes before it advises anything, in order: a pass over the few pages here
    /// takes one batch with no sleep between, and smart scanning is off where the kernel has it.
    /// Smart scanning (should_skip_rmap_item) skips a page that failed to merge for a growing
    /// number of scans; two twins advised a few scans apart then come round on different scans,
    /// never meet in the unstable tree and never merge (LTP ksm01 failed the same way and turns it
    /// off). `run` is written last, after MADV_MERGEABLE, so every page starts on the same scan.
    static func setup(present: (String) -> Bool) -> [(String, String)] {
        [(dir + "/pages_to_scan", "4096"), (dir + "/sleep_millisecs", "0")]
            + (present(dir + "/smart_scan") ? [(dir + "/smart_scan", "0")] : [])
    }
    static let start = (dir + "/run", "1")
    /// What the case reports of ksmd before and after it (pages_skipped counts smart scan's skips).
    static let shown = ["run", "pages_to_scan", "sleep_millisecs", "smart_scan", "pages_shared", "pages_sharing",
                        "pages_unshared", "pages_volatile", "pages_skipped", "full_scans"]
    static func describe(_ names: [String]) -> String {
        names.compactMap { n in CaseKnobs.read(dir + "/" + n).map { "\(n)=\($0)" } }.joined(separator: " ")
    }
    static let madvMergeable: Int32 = 12, madvUnmergeable: Int32 = 13
    /// /proc/kpageflags KPF_KSM (include/uapi/linux/kernel-page-flags.h).
    static let kpfKSM: UInt64 = 1 << 21
    /// A page needs two visits to merge (the first only records its checksum, cmp_and_merge_page),
    /// and the pass running when MADV_MERGEABLE returns may miss it: three passes see two visits.
    static let passes = 3
    static let timeoutNanos: UInt64 = 30_000_000_000

    static var available: Bool { access(dir + "/run", F_OK) == 0 }
    static func counter(_ name: String) -> UInt64? { CaseKnobs.read(dir + "/" + name).flatMap { UInt64($0) } }

    /// Per twin page: `merged` when both copies map one KSM page (the same PFN, KPF_KSM set where
    /// kpageflags is readable), else `unmerged`.
    static func twinStates(_ a: [UInt64?], _ b: [UInt64?], ksm: (UInt64) -> Bool?) -> [String] {
        zip(a, b).map { x, y in
            guard let x, let y, x == y, ksm(x) ?? true else { return "unmerged" }
            return "merged"
        }
    }

    /// Per pinned page: `merged` when the twin maps it (or it left the pin's PFN for a KPF_KSM
    /// page), `kept` at the PFN the pin took, else `moved` (or no longer present). The PFNs come
    /// first: 6.12's kpageflags reports KPF_KSM on every anonymous page (stable_page_flags tests
    /// `mapping & PAGE_MAPPING_KSM`, which the anon bit alone satisfies).
    static func pinnedStates(pinned: [UInt64?], now: [UInt64?], twin: [UInt64?], ksm: (UInt64) -> Bool?) -> [String] {
        now.indices.map { i in
            guard let n = now[i] else { return "moved" }
            if i < twin.count && twin[i] == n { return "merged" }
            if i < pinned.count && pinned[i] == n { return "kept" }
            return ksm(n) == true ? "merged" : "moved"
        }
    }

    /// Waits until full_scans has advanced by `passes` and `done()` holds; nil when it did, else
    /// why not (the counter unreadable, or the time up).
    static func wait(passes: Int, timeoutNanos: UInt64, fullScans: () -> UInt64?, done: () -> Bool = { true },
                     now: () -> UInt64 = monotonicNanos, sleep: () -> Void = { usleep(2000) }) -> (scans: UInt64, error: String?) {
        guard let start = fullScans() else { return (0, "cannot read \(dir)/full_scans") }
        let t0 = now()
        var n = start
        while true {
            guard let c = fullScans() else { return (n - start, "cannot read \(dir)/full_scans") }
            n = c
            if n >= start + UInt64(passes) && done() { return (n - start, nil) }
            let t = now() - t0
            if t > timeoutNanos {
                let what = n >= start + UInt64(passes) ? "" : ", \(passes) wanted"
                return (n - start, "ksmd: full_scans \(start) → \(n) in \(t / 1_000_000_000) s\(what)")
            }
            sleep()
        }
    }

    /// Whether the vma at `addr` carries VM_MERGEABLE ("mg" in smaps' VmFlags): ksm_madvise
    /// returns 0 without setting it on a vma KSM ignores. nil: no VmFlags line.
    static func mergeable(_ addr: UInt64) -> Bool? {
        Mem.smaps(for: addr)["VmFlags"].map { $0.split(separator: " ").contains("mg") }
    }

    /// KPF_KSM of each PFN from /proc/kpageflags (root), nil where it cannot be read.
    static func isKSM(_ pfn: UInt64) -> Bool? {
        let fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var flags: UInt64 = 0
        guard pread(fd, &flags, 8, off_t(pfn * 8)) == 8 else { return nil }
        return flags & kpfKSM != 0
    }
}

extension RealEventWorld {
    /// ksm-merge: two unpinned twins of the kind (the merge partners) and two identical anonymous
    /// control pages are made mergeable first, so their KSM pages sit in the stable tree before
    /// ksmd ever sees the pinned pages; then the pinned range. Every knob is put back and every
    /// merge undone before it returns; page states go to `pageStates`.
    func ksmMerge() -> String {
        guard let makeTwin else { return "no twin builder" }
        let snap = CaseKnobs.snapshot(KSM.knobs)
        guard KSM.required.allSatisfy({ k in snap.contains { $0.path == k } }) else { return "cannot read \(KSM.dir) (CONFIG_KSM)" }
        let pages = Int(size) / PageSize.base
        let pinnedAt = PageInfo.pfns(UInt64(UInt(bitPattern: addr)), pages: pages)
        var twins: [Region] = []
        var control: MappedMemory?
        var advised: [(UnsafeMutableRawPointer, Int)] = []
        defer {
            // Unmerge (breaks each KSM page back into a private copy), then ksmd back as it was.
            for (p, n) in advised { _ = madvise(p, n, KSM.madvUnmergeable) }
            if !twins.isEmpty {
                let a = PageInfo.pfns(twins[0].vaddr, pages: pages), b = PageInfo.pfns(twins[1].vaddr, pages: pages)
                let left = KSM.twinStates(a, b, ksm: KSM.isKSM).filter { $0 == "merged" }.count
                checks.append(Check("ksm-unmerged", left == 0, left == 0 ? "MADV_UNMERGEABLE gave every twin page its own copy again"
                                                                          : "\(left) of \(pages) twin pages still share a KSM page after MADV_UNMERGEABLE"))
            }
            for k in CaseKnobs.putBack(snap) where !k.ok {
                checks.append(Check("ksm-knobs", false, "could not put \(k.path) back to \(k.value) (it was \(k.was ?? "?"))"))
            }
            properties["ksm_after"] = KSM.describe(["pages_shared", "pages_sharing", "pages_skipped", "full_scans"])
            for t in twins { if !t.release() { checks.append(Check("ksm-twin-release", false, "releasing a twin failed")) } }
            control?.unmap()
        }
        // Device-dax has one set of pages: a second mapping would be the pinned pages again.
        if planned.kind != .devdax {
            for _ in 0..<2 {
                do { twins.append(try makeTwin()) } catch { return "building a twin \(planned.kind.rawValue) region: \(error)" }
                probe.cpuWrite(.pre, at: twins.last!.pointer)
            }
        }
        do { control = try MappedMemory.map(length: 2 * PageSize.base, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS) } catch {
            return "mmap control pages: \(error)"
        }
        memset(control!.base, 0x6b, 2 * PageSize.base)
        properties["ksm_before"] = KSM.describe(KSM.shown)
        for (k, v) in KSM.setup(present: { access($0, F_OK) == 0 }) where !CaseKnobs.write(k, v) {
            return "write \(v) to \(k): \(Self.errnoName())"
        }
        func advise(_ p: UnsafeMutableRawPointer, _ n: Int) -> String? {
            guard madvise(p, n, KSM.madvMergeable) == 0 else { return "MADV_MERGEABLE " + Self.errnoName() }
            advised.append((p, n))
            return nil
        }
        for t in twins { if let e = advise(t.pointer, Int(t.size)) { return e } }
        if let e = advise(control!.base, 2 * PageSize.base) { return e }
        if !CaseKnobs.write(KSM.start.0, KSM.start.1) { return "write \(KSM.start.1) to \(KSM.start.0): \(Self.errnoName())" }
        let controlMerged = {
            let p = PageInfo.pfns(control!.address, pages: 2)
            return KSM.twinStates([p[0]], [p[1]], ksm: KSM.isKSM) == ["merged"]
        }
        // A twin KSM took (VM_MERGEABLE set) is waited for until it merged: ksmd may pass over a
        // page a few times (a raised refcount) before it merges.
        let twinTaken = twins.first.flatMap { KSM.mergeable($0.vaddr) }
        let twinMerged = {
            KSM.twinStates(PageInfo.pfns(twins[0].vaddr, pages: pages), PageInfo.pfns(twins[1].vaddr, pages: pages), ksm: KSM.isKSM)
                .allSatisfy { $0 == "merged" }
        }
        var t = monotonicNanos()
        let first = KSM.wait(passes: KSM.passes, timeoutNanos: KSM.timeoutNanos, fullScans: { KSM.counter("full_scans") },
                             done: { controlMerged() && (twinTaken != true || twinMerged()) })
        properties["ksm_twins"] = "\(first.scans) full scans, \((monotonicNanos() - t) / 1_000_000) ms; VM_MERGEABLE "
            + (twins.isEmpty ? "(no twin)" : twinTaken.map { $0 ? "set" : "not set" } ?? "?")
        if let e = first.error {
            properties["ksm_stuck"] = KSM.describe(KSM.shown)
            return e + (controlMerged() ? "" : "; the control pages did not merge") + (twinTaken == true && !twinMerged() ? "; the twins did not merge" : "")
        }
        if let e = advise(addr, Int(size)) { return "pinned range: " + e }
        t = monotonicNanos()
        let second = KSM.wait(passes: KSM.passes, timeoutNanos: KSM.timeoutNanos, fullScans: { KSM.counter("full_scans") })
        properties["ksm_pinned"] = "\(second.scans) full scans, \((monotonicNanos() - t) / 1_000_000) ms; VM_MERGEABLE "
            + (KSM.mergeable(UInt64(UInt(bitPattern: addr))).map { $0 ? "set" : "not set" } ?? "?")
        if let e = second.error { return e }
        properties["ksm_merged"] = KSM.describe(["pages_shared", "pages_sharing", "pages_skipped"])
        let now = PageInfo.pfns(UInt64(UInt(bitPattern: addr)), pages: pages)
        if twins.isEmpty {
            ksmStates["twin"] = Array(repeating: "none", count: pages)
            ksmStates["pinned"] = KSM.pinnedStates(pinned: pinnedAt, now: now, twin: [], ksm: KSM.isKSM)
        } else {
            let a = PageInfo.pfns(twins[0].vaddr, pages: pages), b = PageInfo.pfns(twins[1].vaddr, pages: pages)
            ksmStates["twin"] = KSM.twinStates(a, b, ksm: KSM.isKSM)
            ksmStates["pinned"] = KSM.pinnedStates(pinned: pinnedAt, now: now, twin: a, ksm: KSM.isKSM)
        }
        return "ok"
    }
}
