import Foundation
import SystemPackage
import VFIO

/// What the process does to its memory after the pin: the second dimension of a case (kind × event).
public enum CaseEvent: String, CaseIterable, Sendable, Codable {
    case forkParentWrites = "fork-parent-writes"
    case forkChildWrites = "fork-child-writes"
    case madvDontneed = "madv-dontneed"
    case madvFree = "madv-free"
    /// /proc/sys/vm/compact_memory: compaction must leave pinned pages where they are.
    case compact
    /// munmap, then a fresh private anonymous mapping at the same address (MAP_FIXED).
    case remapAnon = "remap-anon"
    /// munmap, then the same file (memfd, tmpfs, shmem, dax) mapped again at the same address.
    case remapSameFile = "remap-same-file"
    case mremap
    /// mprotect(PROT_READ), the device writes, mprotect(READ|WRITE), the CPU writes.
    case mprotectRoRw = "mprotect-ro-rw"
    /// READ-only map of never-touched private memory, then a CPU write (84209e87c696).
    case cpuWriteAfterReadPin = "cpu-write-after-read-pin"
    /// VFIO_DMA_UNMAP_FLAG_VADDR, munmap, the same / another memfd mapped elsewhere, MAP_FLAG_VADDR.
    case vaddrSameMemfd = "vaddr-same-memfd"
    case vaddrOtherMemfd = "vaddr-other-memfd"
    /// MADV_COLLAPSE (7d8faaf15545, 6.1) on the pinned range: its return code is the outcome;
    /// whatever it is, the pinned pages must stay the process's pages.
    case madvCollapse = "madv-collapse"
    /// MADV_NOHUGEPAGE, then debugfs split_huge_pages over the pinned range: a pinned THP must
    /// not be split away from the device.
    case thpSplit = "thp-split"
    /// mprotect over half the range and back splits a THP's PMD (the folio stays whole and
    /// pinned), then MADV_COLLAPSE: small PTEs of pinned pages, which collapse must refuse.
    case madvCollapsePteMapped = "madv-collapse-pte-mapped"
    /// VFIO_IOMMU_DIRTY_PAGES on a container: START, the device writes some pages, GET_BITMAP,
    /// UNMAP_DMA with GET_DIRTY_BITMAP, STOP; and that flag without tracking first.
    case dirtyPages = "dirty-pages"
    /// iommufd: IOMMU_GET_HW_INFO's dirty capability, IOMMU_HWPT_ALLOC with DIRTY_TRACKING, and
    /// where that works SET_DIRTY_TRACKING, the device writes some pages, GET_DIRTY_BITMAP.
    case hwptDirty = "hwpt-dirty"
    /// MADV_MERGEABLE on the pinned memory and on an unpinned twin of the same kind and content,
    /// ksmd scanning fast: the twin merges, the pinned pages must not (Events/KSMMerge.swift).
    case ksmMerge = "ksm-merge"

    public var summary: String {
        switch self {
        case .forkParentWrites: return "fork(); the parent writes, the device writes; what parent and child see"
        case .forkChildWrites: return "fork(); the child writes first, then the device, then the parent"
        case .madvDontneed: return "MADV_DONTNEED on the pinned range"
        case .madvFree: return "MADV_FREE on the pinned range (no memory pressure follows)"
        case .compact: return "echo 1 > /proc/sys/vm/compact_memory (pinned pages must not move)"
        case .remapAnon: return "munmap + fresh MAP_FIXED private anonymous memory at the same address"
        case .remapSameFile: return "munmap + the same file mapped again MAP_FIXED at the same address"
        case .mremap: return "mremap(MREMAP_MAYMOVE|MREMAP_FIXED) to a new address"
        case .mprotectRoRw: return "mprotect(PROT_READ), device write, mprotect(READ|WRITE), CPU write"
        case .cpuWriteAfterReadPin: return "READ-only DMA map of untouched private memory, then a CPU write"
        case .vaddrSameMemfd: return "VFIO VADDR invalidate, the same memfd mapped at a new address, VADDR update"
        case .vaddrOtherMemfd: return "VFIO VADDR invalidate, a different memfd mapped at a new address, VADDR update"
        case .madvCollapse: return "MADV_COLLAPSE on the pinned range (its errno is the outcome)"
        case .thpSplit: return "MADV_NOHUGEPAGE, then debugfs split_huge_pages over the pinned range"
        case .madvCollapsePteMapped: return "mprotect half the range RO and back (splits the PMD), then MADV_COLLAPSE"
        case .dirtyPages: return "VFIO_IOMMU_DIRTY_PAGES start, the device writes some pages, GET_BITMAP, unmap with the bitmap, stop"
        case .hwptDirty: return "iommufd: HW dirty capability, HWPT_ALLOC(DIRTY_TRACKING), the device writes some pages, GET_DIRTY_BITMAP"
        case .ksmMerge: return "KSM over the pinned memory and an identical unpinned twin (the twin merges, the pinned pages must not)"
        }
    }

    /// Observations the event's steps produce (what its expectation rows must give).
    public var observations: [String] { EventPlan.steps(for: self).compactMap(\.observation) }
}

/// Page contents as patterns: page i of pattern `p` is window page `usable[(p + i) % count]` of
/// the engine's reference, so two patterns differ on every page and none is a uniform fill.
public struct Pattern: Hashable, Sendable, CustomStringConvertible {
    public var offset: Int
    public init(_ offset: Int) { self.offset = offset }
    public var description: String { "pattern \(offset)" }
    /// Before the event, written by the CPU.
    public static let pre = Pattern(1)
    /// Written by the device after the event.
    public static let device = Pattern(101)
    /// Written by the pinning process after the event.
    public static let cpu = Pattern(203)
    /// Written by a forked child.
    public static let child = Pattern(307)
    /// The content of a new object the event maps in (another memfd).
    public static let fill = Pattern(409)
}

/// One step of an event case. Observations name what one side saw after the other wrote.
public enum EventStep: Equatable, Sendable {
    /// The pinning process writes `p` at the memory's current address.
    case cpuWrite(Pattern)
    case map
    /// The device must read `p` through the mapping: the pin is good before the event.
    case baseline(Pattern)
    /// The event itself (its result is the `event` observation).
    case apply
    /// The second half of a two-part event (mprotect back to READ|WRITE): must succeed.
    case undo
    /// The device writes `p` through the mapping (NVMe Read).
    case deviceWrite(Pattern)
    /// The pinned memory holds `p` for the device (the write landed somewhere real).
    case deviceHolds(Pattern)
    /// The pinning process reads its current address; the device wrote `p` last.
    case cpuObserve(String, Pattern)
    /// The device reads the mapping (NVMe Compare); the CPU (or child) wrote `p` last.
    case deviceObserve(String, Pattern)
    case fork
    case childWrite(Pattern)
    case childObserve(String, Pattern)
    case endChild
    /// What became of a region's pages after the event, page by page (ksm-merge: "twin", "pinned").
    case pagesObserve(String)
    case unmap
    /// The dirty-tracking capability the kernel reports (type1's migration cap, iommufd's HW info).
    case dirtyInfo(String)
    /// UNMAP_DMA with GET_DIRTY_BITMAP before tracking started: must fail (its errno is observed).
    case untrackedUnmap(String)
    /// The device writes `p` into the pages EventPlan.dirtySubset names, and only those.
    case deviceWriteSome(Pattern)
    /// The dirty bitmap of the whole mapping, classified against the pages written.
    case dirtyBitmap(String)
    /// UNMAP_DMA with GET_DIRTY_BITMAP while tracking: the bitmap and the bytes unmapped.
    case dirtyUnmap(String)
    /// Tracking off (VFIO_IOMMU_DIRTY_PAGES STOP, or the HWPT's SET_DIRTY_TRACKING off).
    case dirtyStop

    /// Observed before the event on purpose: what the kernel offers, and a call that must fail
    /// while nothing is tracked.
    public var observesBeforeEvent: Bool {
        switch self {
        case .dirtyInfo, .untrackedUnmap: return true
        default: return false
        }
    }

    public var observation: String? {
        switch self {
        case .apply: return "event"
        case .cpuObserve(let n, _), .deviceObserve(let n, _), .childObserve(let n, _), .pagesObserve(let n): return n
        case .dirtyInfo(let n), .untrackedUnmap(let n), .dirtyBitmap(let n), .dirtyUnmap(let n): return n
        default: return nil
        }
    }
}

public enum EventPlan {
    /// The pages a dirty-tracking case has the device write: every third one and the last, so
    /// both set and clear bits fall in every u64 word and the range's end is covered.
    public static func dirtySubset(pages: Int) -> [Int] {
        (0..<pages).filter { $0 % 3 == 0 || $0 == pages - 1 }
    }

    /// The steps of an event case, in order. `unmap` always runs (the executor guarantees it
    /// even when a step before it fails).
    public static func steps(for e: CaseEvent) -> [EventStep] {
        let before: [EventStep] = [.cpuWrite(.pre), .map, .baseline(.pre), .apply]
        // After the event: the device writes, the process reads; the process writes, the device reads.
        let both: [EventStep] = [.deviceWrite(.device), .deviceHolds(.device), .cpuObserve("device_write", .device),
                                 .cpuWrite(.cpu), .deviceObserve("cpu_write", .cpu)]
        switch e {
        case .forkParentWrites:
            return before + [.fork, .cpuWrite(.cpu), .deviceObserve("cpu_write", .cpu),
                             .deviceWrite(.device), .deviceHolds(.device), .cpuObserve("device_write", .device),
                             .childObserve("child_sees", .device), .endChild, .unmap]
        case .forkChildWrites:
            return before + [.fork, .childWrite(.child), .deviceObserve("child_write", .child),
                             .deviceWrite(.device), .deviceHolds(.device), .cpuObserve("device_write", .device),
                             .childObserve("child_sees", .device), .endChild,
                             .cpuWrite(.cpu), .deviceObserve("cpu_write", .cpu), .unmap]
        case .mprotectRoRw:
            // `apply` is mprotect(PROT_READ): the process reads while it is read-only, then
            // `undo` makes it writable again before its own write.
            return before + [.deviceWrite(.device), .deviceHolds(.device), .cpuObserve("device_write", .device),
                             .undo, .cpuWrite(.cpu), .deviceObserve("cpu_write", .cpu), .unmap]
        case .ksmMerge:
            // What KSM did is read right after its scans, before any write breaks a merge.
            return before + [.pagesObserve("twin"), .pagesObserve("pinned")] + both + [.unmap]
        case .cpuWriteAfterReadPin:
            // Untouched memory (the zero page) mapped READ-only: nothing to write before.
            return [.map, .apply, .cpuWrite(.cpu), .deviceObserve("cpu_write", .cpu), .unmap]
        case .dirtyPages:
            // The flag without tracking comes first: should a kernel accept it, it unmapped the
            // range, and the rest observes that. `apply` is START (its errno: `event`).
            return [.cpuWrite(.pre), .map, .baseline(.pre), .dirtyInfo("migration_cap"), .untrackedUnmap("untracked_unmap"),
                    .apply, .deviceWriteSome(.device), .dirtyBitmap("dirty_bitmap"), .dirtyUnmap("unmap_bitmap"), .dirtyStop, .unmap]
        case .hwptDirty:
            // `apply` allocates the dirty-tracking HWPT (its errno: `event`), moves the device onto
            // it and turns tracking on; the bitmap step reads it only when that worked.
            return [.cpuWrite(.pre), .map, .baseline(.pre), .dirtyInfo("hw_dirty_cap"), .apply,
                    .deviceWriteSome(.device), .dirtyBitmap("dirty_bitmap"), .dirtyStop, .unmap]
        default:
            return before + both + [.unmap]
        }
    }
}

/// What one side saw, page by page, reduced to one token: the expected pattern (`seen`), one
/// the event explains (`stale`: the content before it; `zero`; `fill`: the new object's;
/// `own`: the observer's own earlier write; `device-own`: the device's own earlier write), or
/// `other`. Pages that disagree make `mixed(...)`, which no expectation names.
public enum Sight {
    public static let tokens = ["seen", "stale", "zero", "fill", "own", "device-own", "other"]
    /// Page states (`pagesObserve`): the unpinned twin's pages share one KSM page (`merged`) or
    /// not (`unmerged`), or no twin could be built (`none`: device-dax has one set of pages);
    /// the pinned pages are where the pin found them (`kept`), now a KSM page (`merged`) or
    /// elsewhere (`moved`).
    public static let pageTokens = ["twin": ["merged", "unmerged", "none"], "pinned": ["kept", "merged", "moved"]]

    /// The tokens observation `name` may take.
    public static func tokens(for name: String) -> [String] { pageTokens[name] ?? tokens }

    public static func summarize(_ perPage: [String]) -> String {
        guard let first = perPage.first else { return "other" }
        if perPage.allSatisfy({ $0 == first }) { return first }
        var counts: [String: Int] = [:]
        for t in perPage { counts[t, default: 0] += 1 }
        return "mixed(" + counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            .map { "\($0.key)×\($0.value)" }.joined(separator: ",") + ")"
    }
}

/// The memory, the device and the processes an event case acts on. The real one (EventRunner)
/// drives NVMe and syscalls; tests give a fake that models pages the way the kernel promises.
public protocol EventWorld: AnyObject {
    /// The pinning process writes `p` at the memory's current address.
    func cpuWrite(_ p: Pattern) throws
    func map() -> Outcome
    func deviceWrite(_ p: Pattern) throws
    /// Per page: the device reads `p` (nil: reads the all-zero page).
    func deviceReads(_ p: Pattern?) throws -> [Bool]?
    /// Per page: the pinning process reads `p` (nil: zero) at the current address.
    func cpuReads(_ p: Pattern?) -> [Bool]
    /// The event: "ok" or an errno name, and the pattern a newly mapped object holds.
    func apply(_ e: CaseEvent) -> (result: String, fill: Pattern?)
    /// Undoes the first part of a two-part event; nil when it worked, else why not.
    func undo(_ e: CaseEvent) -> String?
    func fork() throws
    func childWrite(_ p: Pattern) throws
    func childReads(_ p: Pattern?) throws -> [Bool]
    /// Ends the child; nil when it exited cleanly.
    func endChild() -> String?
    /// Unmaps the IOVA range; nil when it reported the mapped size.
    func unmap() -> String?
    /// Per page, the state of `region` ("twin", "pinned") the event left (Sight.pageTokens).
    func pageStates(_ region: String) -> [String]

    // Dirty tracking (dirty-pages, hwpt-dirty).
    /// The device writes `p` into the listed pages only.
    func deviceWrite(_ p: Pattern, pages: [Int]) throws
    /// The tracking capability as a token: `absent`, `pgsize=N,max_bitmap=M`, `present`, or an errno.
    func dirtyInfo(_ e: CaseEvent) -> String
    /// The mapping's dirty bitmap (nil: there is nothing to ask, e.g. no dirty-tracking HWPT).
    func dirtyBitmap() -> Result<DirtyBitmap, Errno>?
    /// UNMAP_DMA with VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP over the mapping.
    func unmapGettingDirty() -> Result<(unmapped: UInt64, bitmap: DirtyBitmap), Errno>
    /// Tracking off; nil when that worked (or there was nothing to stop).
    func dirtyStop() -> String?
    /// Bytes the case mapped (what an unmap must report).
    var mappedSize: UInt64 { get }
    /// The mapping's 4 KiB pages (one bitmap bit each, one device page each).
    var pageCount: Int { get }
}

extension EventWorld {
    func deviceWrite(_ p: Pattern, pages: [Int]) throws { throw EventStepError("this world writes whole mappings only") }
    func dirtyInfo(_ e: CaseEvent) -> String { "absent" }
    func dirtyBitmap() -> Result<DirtyBitmap, Errno>? { nil }
    func unmapGettingDirty() -> Result<(unmapped: UInt64, bitmap: DirtyBitmap), Errno> { .failure(.notSupported) }
    func dirtyStop() -> String? { nil }
    /// Worlds that run no ksm-merge have no page states to give.
    func pageStates(_ region: String) -> [String] { [] }
}

/// The tokens of dirty-tracking observations besides an errno name (`not-run`: nothing to ask).
public enum DirtyToken {
    public static let bitmap = ["all", "written", "none", "other", "not-run"]
    public static let capability = ["absent", "present"]

    /// Whether `v` is a value observation `name` can take (events.yaml is checked with it).
    public static func valid(_ name: String, _ v: String) -> Bool {
        let errno = v != "ok" && Expectations.validOutcome(v)
        switch name {
        case "event", "untracked_unmap": return Expectations.validOutcome(v)
        case "dirty_bitmap", "unmap_bitmap": return bitmap.contains(v) || errno
        case "hw_dirty_cap": return capability.contains(v) || errno
        case "migration_cap":
            if v == "absent" { return true }
            let f = v.split(separator: ",").map { $0.split(separator: "=", maxSplits: 1) }
            return f.count == 2 && f[0].first == "pgsize" && f[1].first == "max_bitmap" && f.allSatisfy { $0.count == 2 && UInt64($0[1]) != nil }
        default: return Sight.tokens.contains(v)
        }
    }
}

public struct EventResult: Equatable, Sendable {
    public var mapOutcome: Outcome = .ok
    public var observations: [String: String] = [:]
    public var checks: [Check] = []
    /// The steps that ran, in order (what the sequencing tests look at).
    public var ran: [EventStep] = []
}

/// Walks an event's steps against a world. A failed step ends the sequence, but a forked
/// child is always ended and an accepted mapping always unmapped.
public enum EventExecutor {
    public static func run(_ e: CaseEvent, world w: EventWorld) -> EventResult {
        var r = EventResult()
        var pre: Pattern?, device: Pattern?, own: Pattern?, childOwn: Pattern?, fill: Pattern?
        var mapped = false, forked = false, failed = false
        var written: Set<Int> = []
        /// What a bitmap must hold at least: every page the device wrote (a clear bit there loses
        /// the page in a migration). Type1 may set more (all, for a device outside pin scope).
        func bitmapChecks(_ name: String, _ bm: DirtyBitmap) -> String {
            let missing = written.filter { !bm.isSet($0) }.sorted()
            r.checks.append(Check("\(name)-covers-written", missing.isEmpty && !bm.overrun && bm.strayBits == 0,
                                  missing.isEmpty && !bm.overrun && bm.strayBits == 0
                                  ? "\(bm.setPages.count) of \(bm.pages) bits set, all \(written.count) written pages among them"
                                  : "written pages without their bit: \(missing.prefix(8).map(String.init).joined(separator: ","))\(missing.count > 8 ? "…" : "") (\(missing.count) of \(written.count)); bits past the range: \(bm.strayBits); wrote past the bitmap: \(bm.overrun)"))
            return bm.classify(written: written)
        }
        func sight(_ perPage: (Pattern?) throws -> [Bool]?, _ cands: [(String, Pattern?)]) throws -> String {
            var tokens: [String?] = []
            for (name, p) in cands {
                guard let hits = try perPage(p) else { continue }
                if tokens.isEmpty { tokens = Array(repeating: nil, count: hits.count) }
                for (i, h) in hits.enumerated() where h && tokens[i] == nil { tokens[i] = name }
                if tokens.allSatisfy({ $0 != nil }) { break }
            }
            return Sight.summarize(tokens.map { $0 ?? "other" })
        }
        func cands(_ seen: Pattern, _ more: [(String, Pattern?)]) -> [(String, Pattern?)] {
            [("seen", seen)] + more.filter { $0.1 != nil && $0.1 != seen } + [("zero", nil)]
        }
        for step in EventPlan.steps(for: e) {
            if failed && step != .unmap && step != .endChild { continue }
            if step == .unmap && !mapped { continue }
            if step == .endChild && !forked { continue }
            r.ran.append(step)
            do {
                switch step {
                case .cpuWrite(let p):
                    try w.cpuWrite(p)
                    if pre == nil && !mapped { pre = p } else { own = p }
                case .map:
                    r.mapOutcome = w.map()
                    if r.mapOutcome == .ok { mapped = true } else { failed = true }
                case .baseline(let p):
                    guard let hits = try w.deviceReads(p) else { throw EventStepError("the device cannot compare") }
                    let bad = hits.filter { !$0 }.count
                    r.checks.append(Check("baseline", bad == 0, bad == 0 ? "the device reads what the CPU wrote on all \(hits.count) pages before the event"
                                                                        : "\(bad) of \(hits.count) pages differ before the event: the pin itself is broken"))
                    if bad > 0 { failed = true }
                case .apply:
                    let (res, f) = w.apply(e)
                    r.observations["event"] = res
                    fill = f
                case .undo:
                    if let why = w.undo(e) { r.checks.append(Check("event-undo", false, why)); failed = true }
                case .deviceWrite(let p):
                    try w.deviceWrite(p)
                    device = p
                case .deviceHolds(let p):
                    guard let hits = try w.deviceReads(p) else { break }
                    let bad = hits.filter { !$0 }.count
                    r.checks.append(Check("device-wrote", bad == 0, bad == 0 ? "the pinned pages hold the device's write"
                                                                            : "\(bad) of \(hits.count) pinned pages lack the device's write"))
                case .cpuObserve(let name, let p):
                    r.observations[name] = try sight({ w.cpuReads($0) }, cands(p, [("fill", fill), ("own", own), ("stale", pre)]))
                case .deviceObserve(let name, let p):
                    r.observations[name] = try sight({ try w.deviceReads($0) }, cands(p, [("device-own", device), ("stale", pre)]))
                case .fork:
                    try w.fork()
                    forked = true
                case .childWrite(let p):
                    try w.childWrite(p)
                    childOwn = p
                case .childObserve(let name, let p):
                    r.observations[name] = try sight({ try w.childReads($0) }, cands(p, [("own", childOwn), ("stale", pre)]))
                case .pagesObserve(let name):
                    r.observations[name] = Sight.summarize(w.pageStates(name))
                case .endChild:
                    forked = false
                    if let why = w.endChild() { r.checks.append(Check("child", false, why)) }
                case .unmap:
                    mapped = false
                    if let why = w.unmap() { r.checks.append(Check("unmap", false, why)) }
                case .dirtyInfo(let name):
                    r.observations[name] = w.dirtyInfo(e)
                case .untrackedUnmap(let name):
                    switch w.unmapGettingDirty() {
                    case .success: r.observations[name] = "ok"; mapped = false; failed = true
                    case .failure(let err): r.observations[name] = err.symbol
                    }
                case .deviceWriteSome(let p):
                    let list = EventPlan.dirtySubset(pages: w.pageCount)
                    try w.deviceWrite(p, pages: list)
                    written = Set(list)
                    if let hits = try w.deviceReads(p) {
                        let wrong = hits.indices.filter { hits[$0] != written.contains($0) }
                        r.checks.append(Check("device-wrote", wrong.isEmpty, wrong.isEmpty ? "the device wrote exactly the \(list.count) pages asked (of \(hits.count))"
                                              : "\(wrong.count) pages do not match the device's partial write"))
                    }
                case .dirtyBitmap(let name):
                    switch w.dirtyBitmap() {
                    case nil: r.observations[name] = "not-run"
                    case .failure(let err)?: r.observations[name] = err.symbol
                    case .success(let bm)?: r.observations[name] = bitmapChecks(name, bm)
                    }
                case .dirtyUnmap(let name):
                    switch w.unmapGettingDirty() {
                    case .failure(let err): r.observations[name] = err.symbol
                    case .success(let u):
                        mapped = false
                        r.observations[name] = bitmapChecks(name, u.bitmap)
                        r.checks.append(Check("unmap", u.unmapped == w.mappedSize, "UNMAP_DMA with the bitmap reported \(u.unmapped) of \(w.mappedSize) bytes"))
                    }
                case .dirtyStop:
                    if let why = w.dirtyStop() { r.checks.append(Check("dirty-stop", false, why)) }
                }
            } catch {
                r.checks.append(Check("step", false, "\(step): \(error)"))
                failed = true
            }
        }
        return r
    }
}

public struct EventStepError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
