import Foundation
import XCTest
import SystemPackage
@testable import VFIO
@testable import Exerciser

/// A page-level model of the kernel under an event, for the event executor: physical pages hold
/// a pattern or zero, the process and an optional child map page i to a physical page, and the
/// IOMMU maps page i to the page the pin took. Each event does what the kernel's mechanism does;
/// the `bug` knobs model kernels that break a promise.
final class FakeEventKernel: EventWorld {
    enum Memory { case privateAnon, shared, untouched }
    enum Bug { case none, forkSharesPinnedPage, readPinTakesZeroPage, collapseOrSplitReplacesPinnedPage, ksmMergesPinnedPage, ksmMergesNothing }

    let pages: Int
    let memory: Memory
    var bug: Bug
    /// Physical pages: nil = zero-filled.
    var phys: [Pattern?] = []
    /// The shared zero page.
    let zeroPage = -1
    var cpu: [Int?]
    var child: [Int?]? = nil
    /// Child pages that are COW-shared with the parent (written copies become private).
    var iommu: [Int]? = nil
    var log: [String] = []
    var failOn: String?
    /// What madvise / the split answers (MADV_COLLAPSE gives an errno where it cannot collapse).
    var eventResult = "ok"
    /// What ksm-merge left, per region ("twin", "pinned"), page by page.
    var ksm: [String: [String]] = [:]

    init(pages: Int = 4, memory: Memory, bug: Bug = .none) {
        self.pages = pages
        self.memory = memory
        self.bug = bug
        if memory == .untouched {
            cpu = Array(repeating: zeroPage, count: pages)
        } else {
            phys = Array(repeating: nil, count: pages)
            cpu = Array(0..<pages)
        }
    }

    func newPage(_ c: Pattern?) -> Int { phys.append(c); return phys.count - 1 }
    func content(_ p: Int) -> Pattern? { p == zeroPage ? nil : phys[p] }
    func step(_ s: String) throws { log.append(s); if failOn == s { throw EventStepError("injected failure in \(s)") } }

    /// A write through a process's page table: a missing or zero page faults a new one; a
    /// shared-with-the-child private page is copied first (COW).
    func write(_ table: inout [Int?], _ p: Pattern, cowAgainst other: [Int?]?) {
        for i in 0..<pages {
            if let page = table[i], page != zeroPage {
                let sharedWithOther = other?[i] == page && memory != .shared
                if sharedWithOther { table[i] = newPage(nil) }
            } else {
                table[i] = newPage(nil)
            }
            phys[table[i]!] = Pattern(p.offset + i)
        }
    }

    func read(_ table: inout [Int?], _ p: Pattern?) -> [Bool] {
        (0..<pages).map { i in
            if table[i] == nil { table[i] = zeroPage }  // a read fault maps the zero page
            let c = content(table[i]!)
            return p.map { c == Pattern($0.offset + i) } ?? (c == nil)
        }
    }

    func cpuWrite(_ p: Pattern) throws { try step("cpuWrite"); write(&cpu, p, cowAgainst: child) }
    func map() -> Outcome {
        log.append("map")
        if memory == .untouched && bug != .readPinTakesZeroPage {
            cpu = cpu.map { _ in newPage(nil) }  // unshare before a R/O long-term pin
        }
        iommu = cpu.map { $0 ?? newPage(nil) }
        return .ok
    }
    func deviceWrite(_ p: Pattern) throws {
        try step("deviceWrite")
        for (i, page) in iommu!.enumerated() where page != zeroPage { phys[page] = Pattern(p.offset + i) }
    }
    func deviceReads(_ p: Pattern?) throws -> [Bool]? {
        try step("deviceReads")
        return iommu!.enumerated().map { i, page in p.map { content(page) == Pattern($0.offset + i) } ?? (content(page) == nil) }
    }
    func cpuReads(_ p: Pattern?) -> [Bool] { log.append("cpuReads"); return read(&cpu, p) }
    func apply(_ e: CaseEvent) -> (result: String, fill: Pattern?) {
        log.append("apply")
        switch e {
        case .dirtyPages, .hwptDirty:
            return (apply(dirty: e), nil)
        case .madvDontneed, .remapAnon:
            if memory != .shared || e == .remapAnon { cpu = Array(repeating: nil, count: pages) }
            return ("ok", nil)
        case .madvCollapse, .thpSplit, .madvCollapsePteMapped:
            // The kernel refuses to copy or split a folio with extra references: the process keeps
            // the pinned pages. The buggy one copies them into new pages and maps those instead.
            if bug == .collapseOrSplitReplacesPinnedPage { cpu = cpu.map { $0.map { newPage(content($0)) } } }
            return (eventResult, nil)
        case .vaddrOtherMemfd:
            cpu = (0..<pages).map { newPage(Pattern(Pattern.fill.offset + $0)) }
            return ("ok", .fill)
        case .ksmMerge:
            // ksm_madvise ignores shared vmas; the twins of a private kind merge with each other.
            let merges = memory != .shared && bug != .ksmMergesNothing
            ksm["twin"] = Array(repeating: merges ? "merged" : "unmerged", count: pages)
            ksm["pinned"] = Array(repeating: "kept", count: pages)
            if merges && bug == .ksmMergesPinnedPage {
                // write_protect_page without its refcount check: the process now maps the KSM
                // page (a copy), the device keeps the pinned one.
                cpu = cpu.map { $0.map { newPage(content($0)) } }
                ksm["pinned"] = Array(repeating: "merged", count: pages)
            }
            return ("ok", nil)
        default:
            return ("ok", nil)
        }
    }
    func undo(_ e: CaseEvent) -> String? { log.append("undo"); return nil }
    func fork() throws {
        try step("fork")
        child = cpu
        // The kernel copies maybe-pinned private pages for the child at fork (70e806e4e645);
        // the buggy kernel shares them COW, so the parent's next write moves it off the pin.
        if memory == .privateAnon && bug != .forkSharesPinnedPage {
            child = cpu.map { $0.map { newPage(content($0)) } }
        }
    }
    func childWrite(_ p: Pattern) throws {
        try step("childWrite")
        var c = child!
        write(&c, p, cowAgainst: cpu)
        child = c
    }
    func childReads(_ p: Pattern?) throws -> [Bool] {
        try step("childReads")
        var c = child!
        defer { child = c }
        return read(&c, p)
    }
    func endChild() -> String? { log.append("endChild"); child = nil; return nil }
    func unmap() -> String? { log.append("unmap"); iommu = nil; return nil }

    // MARK: dirty tracking, as type1 and iommufd decide it

    /// Which kernel object answers the dirty-tracking calls.
    enum Tracker {
        /// A type1 container holding a vfio-pci group (not in pinned-page dirty scope).
        case type1(v2: Bool)
        /// A type1v2 container whose only group pins through vfio_pin_pages (mdev): precise.
        case type1PinScope
        /// /dev/iommu as the container (vfio_compat.c).
        case compat
        /// iommufd native: the IOMMU reports dirty bits if it has SSADS.
        case hwpt(ssads: Bool)
    }
    var tracker: Tracker = .type1(v2: true)
    var tracking = false
    var hwptAllocated = false
    /// Pages the IOMMU (hwpt) or vfio_pin_pages/vfio_dma_rw (pin scope) logged.
    var logged: Set<Int> = []
    /// Pages the mdev holds pinned through vfio_pin_pages (pin scope).
    var pinnedPages: Set<Int> = []
    /// Bug knob: the tracker loses the last written page (a broken promise).
    var dropsLastDirtyPage = false
    /// Bug knob: UNMAP_DMA with GET_DIRTY_BITMAP works without tracking (and so unmaps).
    var acceptsUntrackedUnmap = false
    var mappedSize: UInt64 { UInt64(pages) * 4096 }
    var pageCount: Int { pages }

    func deviceWrite(_ p: Pattern, pages list: [Int]) throws {
        try step("deviceWriteSome")
        for i in list { phys[iommu![i]] = Pattern(p.offset + i) }
        let tracked: Bool
        switch tracker {
        case .type1PinScope: tracked = tracking
        case .hwpt: tracked = tracking && hwptAllocated
        default: tracked = false
        }
        if case .type1PinScope = tracker { pinnedPages.formUnion(list) }
        if tracked { logged.formUnion(list) }
        if dropsLastDirtyPage, let last = list.max() { logged.remove(last) }
    }

    func dirtyInfo(_ e: CaseEvent) -> String {
        switch tracker {
        case .type1, .type1PinScope:
            // vfio_iommu_migration_build_caps: the smallest IOMMU page, DIRTY_BITMAP_BYTES(INT_MAX).
            return "pgsize=4096,max_bitmap=\(FakeType1Bitmap.bytes(Int(Int32.max)))"
        case .compat: return "absent"
        case .hwpt(let ssads): return ssads ? "present" : "absent"
        }
    }

    func apply(dirty e: CaseEvent) -> String {
        switch tracker {
        case .type1(v2: false): return "EACCES"
        case .type1, .type1PinScope: tracking = true; logged = []; return "ok"
        case .compat: return "ENOTTY"
        case .hwpt(let ssads):
            guard ssads else { return "EOPNOTSUPP" }
            hwptAllocated = true; tracking = true; logged = []
            return "ok"
        }
    }

    /// The bits the kernel reports, written as update_user_bitmap writes them.
    func report() -> DirtyBitmap {
        let all: Bool
        if case .type1(v2: true) = tracker { all = true } else { all = false }
        let bits = all ? Set(0..<pages) : logged
        // Through the tool's own buffer handling, as the kernel's copy_to_user fills it.
        return DirtyBitmap.withBuffer(pgsize: 4096, pages: pages) { FakeType1Bitmap.copyOut(bits: bits, pages: pages, to: $0, size: Int($1)) }.1
    }

    func dirtyBitmap() -> Result<DirtyBitmap, Errno>? {
        log.append("dirtyBitmap")
        switch tracker {
        case .type1(v2: false): return .failure(.permissionDenied)
        case .compat: return .failure(.inappropriateIOCTLForDevice)
        case .hwpt: if !hwptAllocated { return nil }
        default: break
        }
        guard tracking else { return .failure(.invalidArgument) }
        // Read and clear; type1 marks the still-pinned pages again (vfio_dma_populate_bitmap).
        defer { if case .hwpt = tracker { logged = [] } else { logged = pinnedPages } }
        return .success(report())
    }

    func unmapGettingDirty() -> Result<(unmapped: UInt64, bitmap: DirtyBitmap), Errno> {
        log.append("unmapGettingDirty")
        if case .compat = tracker { return .failure(.invalidArgument) }
        if acceptsUntrackedUnmap && !tracking && iommu != nil {
            iommu = nil
            return .success((mappedSize, DirtyBitmap(pgsize: 4096, pages: pages)))
        }
        guard tracking, iommu != nil else { return .failure(.invalidArgument) }
        let bm = report()
        iommu = nil
        pinnedPages = []  // the .dma_unmap notification made the mdev unpin
        return .success((mappedSize, bm))
    }

    func dirtyStop() -> String? { log.append("dirtyStop"); tracking = false; return nil }
    func pageStates(_ region: String) -> [String] { log.append("pageStates"); return ksm[region] ?? [] }
}

/// type1's bitmap rules (vfio_iommu_type1.c): DIRTY_BITMAP_BYTES(n) = ALIGN(n, 64) / 8 bytes;
/// bit i is bit i % 64 of little-endian u64 word i / 64 (bitmap_set on unsigned long).
enum FakeType1Bitmap {
    static func bytes(_ n: Int) -> Int { (n + 63) / 64 * 8 }

    /// The bytes copy_to_user hands back for `bits` of `pages`.
    static func write(bits: Set<Int>, pages: Int) -> [UInt8] {
        var words = [UInt64](repeating: 0, count: bytes(pages) / 8)
        for i in bits { words[i / 64] |= 1 << UInt64(i % 64) }
        return words.flatMap { w in (0..<8).map { UInt8(truncatingIfNeeded: w.littleEndian >> UInt64($0 * 8)) } }
    }

    /// verify_bitmap_size: no pages, no buffer, a buffer over DIRTY_BITMAP_SIZE_MAX or too small is EINVAL.
    static func verify(pages: Int, size: Int) -> Bool {
        pages > 0 && size > 0 && size <= bytes(Int(Int32.max)) && size >= bytes(pages)
    }

    /// The kernel's side: verify the size, then copy DIRTY_BITMAP_BYTES(pages) bytes (whole
    /// words, nothing past them). Returns 0 or EINVAL.
    @discardableResult
    static func copyOut(bits: Set<Int>, pages: Int, to data: UnsafeMutablePointer<UInt64>, size: Int) -> Int32 {
        guard verify(pages: pages, size: size) else { return EINVAL }
        let raw = write(bits: bits, pages: pages)
        UnsafeMutableRawPointer(data).copyMemory(from: raw, byteCount: raw.count)
        return 0
    }
}
