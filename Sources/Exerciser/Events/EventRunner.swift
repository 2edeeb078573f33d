import CVFIO
import Foundation
import SystemPackage
import VFIO

/// The real world of an event case: the region built by its kind's backing, the session's DMA
/// space and NVMe engine, syscalls for the events, and a forked child for the fork events.
final class RealEventWorld: EventWorld {
    let session: Session
    let planned: PlannedCase
    let region: Region
    let iova: UInt64
    let size: UInt64
    let probe: NVMeEventProbe
    /// The memory's current address (mremap and VADDR updates move it).
    var addr: UnsafeMutableRawPointer
    /// Mappings the event made; unmapped after the region.
    var owned: [MappedMemory] = []
    var fds: [FDOwner] = []
    var properties: [String: String] = [:]
    var unmappedBytes: UInt64?
    var mapNanos: UInt64?
    var child: (pid: Int32, toChild: Int32, fromChild: Int32)?
    /// dirty-pages: START worked, so STOP is due.
    var tracking = false
    #if IOMMUFD_UAPI
    /// hwpt-dirty: the dirty-tracking HWPT the NVMe was moved onto, and the NVMe's device.
    var hwpt: HWPT?
    var hwptDevice: Device?
    #endif
    /// ksm-merge: builds another unpinned region of the case's kind; the page states it left;
    /// checks of its own clean-up.
    var makeTwin: (() throws -> Region)?
    var ksmStates: [String: [String]] = [:]
    var checks: [Check] = []

    init(session: Session, planned: PlannedCase, region: Region, iova: UInt64, engine: NVMeEngine) throws {
        self.session = session
        self.planned = planned
        self.region = region
        self.iova = iova
        size = region.size
        addr = region.pointer
        probe = try NVMeEventProbe(engine: engine, iova: iova, pages: Int(region.size) / engine.unit)
    }

    static func errnoName(_ e: Int32 = errno) -> String { Errno(rawValue: e).symbol }

    func cpuWrite(_ p: Pattern) throws { probe.cpuWrite(p, at: addr) }

    func map() -> Outcome {
        let t = monotonicNanos()
        let r = session.space.map(vaddr: UInt64(UInt(bitPattern: addr)), iova: iova, size: size, flags: planned.dmaFlags)
        mapNanos = monotonicNanos() - t
        return Outcome(r)
    }

    func deviceWrite(_ p: Pattern) throws { try probe.deviceWrite(p) }
    func deviceWrite(_ p: Pattern, pages: [Int]) throws { try probe.deviceWrite(p, pages: pages) }
    var mappedSize: UInt64 { size }
    var pageCount: Int { probe.pages }
    func deviceReads(_ p: Pattern?) throws -> [Bool]? { try probe.deviceReads(p) }
    func cpuReads(_ p: Pattern?) -> [Bool] { probe.cpuReads(p, at: addr) }

    /// The file behind the current mapping, through /proc/self/map_files (root), and its offset.
    func backingFile() -> (fd: Int32, offset: Int)? {
        let a = UInt(bitPattern: addr)
        guard let maps = readProcFile("/proc/self/maps") else { return nil }
        for line in maps.split(whereSeparator: \.isNewline) {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 3, let dash = f[0].firstIndex(of: "-"),
                  let lo = UInt(f[0][..<dash], radix: 16), let hi = UInt(f[0][f[0].index(after: dash)...], radix: 16),
                  a >= lo && a < hi, let pgoff = Int(f[2], radix: 16) else { continue }
            let fd = open("/proc/self/map_files/\(f[0])", O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { return nil }
            fds.append(FDOwner(FileDescriptor(rawValue: fd)))
            return (fd, pgoff + Int(a - lo))
        }
        return nil
    }

    /// PROT_NONE over a range the event emptied, so the region's own munmap at release finds
    /// this and not something mapped there later.
    func placeholder(_ at: UnsafeMutableRawPointer) {
        if let p = mmap(at, Int(size), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0), p != MAP_FAILED {
            if p != at { munmap(p, Int(size)) }
        }
    }

    /// A fresh address range aligned for the kind's pages (2 MiB covers THP and hugetlb-2M).
    func reserve() throws -> MappedMemory {
        do { return try MappedMemory.map(length: Int(size), prot: PROT_NONE, flags: MAP_PRIVATE | MAP_ANONYMOUS | 0x4000 /* MAP_NORESERVE */, alignment: 2 << 20) } catch {
            throw EventStepError("reserving a new address: \(error)")
        }
    }

    func apply(_ e: CaseEvent) -> (result: String, fill: Pattern?) {
        let len = Int(size)
        switch e {
        case .forkParentWrites, .forkChildWrites, .cpuWriteAfterReadPin:
            return ("ok", nil)  // the event is the fork or the write step itself
        case .madvDontneed:
            return (madvise(addr, len, 4 /* MADV_DONTNEED */) == 0 ? "ok" : Self.errnoName(), nil)
        case .madvFree:
            return (madvise(addr, len, 8 /* MADV_FREE */) == 0 ? "ok" : Self.errnoName(), nil)
        case .compact:
            // A trigger, not a setting: nothing to restore.
            let fd = open("/proc/sys/vm/compact_memory", O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { return ("open compact_memory " + Self.errnoName(), nil) }
            defer { close(fd) }
            return (write(fd, "1", 1) == 1 ? "ok" : Self.errnoName(), nil)
        case .mprotectRoRw:
            return (mprotect(addr, len, PROT_READ) == 0 ? "ok" : Self.errnoName(), nil)
        case .remapAnon:
            guard munmap(addr, len) == 0 else { return ("munmap " + Self.errnoName(), nil) }
            guard let p = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0), p == addr else {
                return ("mmap " + Self.errnoName(), nil)
            }
            return ("ok", nil)
        case .remapSameFile:
            guard let (fd, off) = backingFile() else { return ("map_files " + Self.errnoName(), nil) }
            guard munmap(addr, len) == 0 else { return ("munmap " + Self.errnoName(), nil) }
            guard let p = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, off_t(off)), p == addr else {
                let why = Self.errnoName()
                placeholder(addr)
                return ("mmap " + why, nil)
            }
            return ("ok", nil)
        case .mremap:
            let dest: MappedMemory
            do { dest = try reserve() } catch { return ("\(error)", nil) }
            guard let p = cvfio_mremap_fixed(addr, len, dest.base), p != MAP_FAILED else {
                let why = Self.errnoName()
                dest.unmap()
                return (why, nil)
            }
            owned.append(dest)  // the moved vma now sits at dest
            let old = addr
            addr = p
            placeholder(old)
            properties["moved_to"] = String(format: "0x%lx", UInt(bitPattern: p))
            return ("ok", nil)
        case .vaddrSameMemfd, .vaddrOtherMemfd:
            return vaddrUpdate(sameObject: e == .vaddrSameMemfd)
        case .madvCollapse:
            return (madvise(addr, len, 25 /* MADV_COLLAPSE */) == 0 ? "ok" : Self.errnoName(), nil)
        case .thpSplit:
            return thpSplit()
        case .madvCollapsePteMapped:
            // A vma split (mprotect of one half) splits the PMD; the way back merges the vma again.
            let half = len / 2
            guard mprotect(addr + half, half, PROT_READ) == 0 else { return ("mprotect(READ) " + Self.errnoName(), nil) }
            guard mprotect(addr + half, half, PROT_READ | PROT_WRITE) == 0 else { return ("mprotect(READ|WRITE) " + Self.errnoName(), nil) }
            properties["thp_after_pmd_split"] = PageInfo.thpState(UInt64(UInt(bitPattern: addr)), pages: len / PageSize.base)
            return (madvise(addr, len, 25 /* MADV_COLLAPSE */) == 0 ? "ok" : Self.errnoName(), nil)
        case .dirtyPages:
            guard let vfio = session.container else { return ("no VFIO container", nil) }
            switch vfio.dirtyPages(.start) {
            case .success: tracking = true; return ("ok", nil)
            case .failure(let e): return (e.symbol, nil)
            }
        case .hwptDirty:
            return (hwptStart(), nil)
        case .ksmMerge:
            return (ksmMerge(), nil)
        }
    }

    // MARK: dirty tracking

    static let bitmapPage = UInt64(PageSize.base)

    func dirtyInfo(_ e: CaseEvent) -> String {
        if e == .hwptDirty { return hwCapability() }
        guard let vfio = session.container else { return "absent" }
        switch vfio.info() {
        case .failure(let err): return err.symbol
        case .success(let i):
            guard let m = i.migration else { return "absent" }
            properties["migration_cap_flags"] = String(m.flags)
            return "pgsize=\(m.pgsizeBitmap),max_bitmap=\(m.maxDirtyBitmapSize)"
        }
    }

    func dirtyBitmap() -> Result<DirtyBitmap, Errno>? {
        if planned.event == .hwptDirty {
            #if IOMMUFD_UAPI
            return hwpt?.dirtyBitmap(iova: iova, length: size, pgsize: Self.bitmapPage)
            #else
            return nil
            #endif
        }
        guard let vfio = session.container else { return nil }
        return vfio.dirtyBitmap(iova: iova, size: size, pgsize: Self.bitmapPage)
    }

    func unmapGettingDirty() -> Result<(unmapped: UInt64, bitmap: DirtyBitmap), Errno> {
        guard let vfio = session.container else { return .failure(.notSupported) }
        let r = vfio.unmapGettingDirty(iova: iova, size: size, pgsize: Self.bitmapPage)
        if case .success(let u) = r { unmappedBytes = u.unmapped }
        return r
    }

    func dirtyStop() -> String? {
        if planned.event == .hwptDirty { return hwptStop() }
        guard tracking, let vfio = session.container else { return nil }
        tracking = false
        if case .failure(let e) = vfio.dirtyPages(.stop) { return "VFIO_IOMMU_DIRTY_PAGES STOP: \(e.symbol)" }
        return nil
    }

    #if IOMMUFD_UAPI
    /// The NVMe's iommufd device id and its open device, on the iommufd backend.
    func nvmeOnIOMMUFD() -> (backend: IOMMUFDBackend, devID: UInt32, device: Device)? {
        guard let b = session.backend as? IOMMUFDBackend, let a = session.nvmeAddress, let id = b.devIDs[a],
              let dev = ([session.device].compactMap { $0 } + session.extraDevices).first(where: { $0.name == a }) else { return nil }
        return (b, id, dev)
    }
    #endif

    func hwCapability() -> String {
        #if IOMMUFD_UAPI
        guard let n = nvmeOnIOMMUFD() else { return "absent" }
        switch n.backend.iommufd.hwCapabilities(devID: n.devID) {
        case .failure(let e): return e.symbol
        case .success(let caps):
            properties["hw_capabilities"] = String(format: "0x%llx", caps)
            return caps & HWPT.dirtyTrackingCap != 0 ? "present" : "absent"
        }
        #else
        return "absent"
        #endif
    }

    /// IOMMU_HWPT_ALLOC(DIRTY_TRACKING) for the NVMe over the case's IOAS; where the driver
    /// gives one, the NVMe moves onto it (the IOAS's mappings come along) with tracking on.
    func hwptStart() -> String {
        #if IOMMUFD_UAPI
        guard let n = nvmeOnIOMMUFD() else { return "no NVMe bound to the iommufd" }
        switch n.backend.iommufd.allocHWPT(devID: n.devID, ioas: n.backend.ioas, flags: HWPT.dirtyTrackingFlag) {
        case .failure(let e): return e.symbol
        case .success(let h):
            hwpt = h
            properties["hwpt"] = String(h.id)
            do { try n.device.attach(pt: h.id) } catch { return "attach to the HWPT: \(error.errno.symbol)" }
            hwptDevice = n.device
            if case .failure(let e) = h.setDirtyTracking(true) { return "SET_DIRTY_TRACKING: \(e.symbol)" }
            // Read and clear whatever the domain logged before the device's write.
            if case .failure(let e) = h.dirtyBitmap(iova: iova, length: size, pgsize: Self.bitmapPage) { return "GET_DIRTY_BITMAP (clear): \(e.symbol)" }
            return "ok"
        }
        #else
        return "built without iommufd"
        #endif
    }

    /// Tracking off, the NVMe back on the IOAS, the HWPT destroyed.
    func hwptStop() -> String? {
        #if IOMMUFD_UAPI
        guard let h = hwpt else { return nil }
        var problems: [String] = []
        if case .failure(let e) = h.setDirtyTracking(false) { problems.append("SET_DIRTY_TRACKING off: \(e.symbol)") }
        if let d = hwptDevice, let n = nvmeOnIOMMUFD() {
            do { try d.attach(pt: n.backend.ioas.id) } catch { problems.append("back to the IOAS: \(error.errno.symbol)") }
        }
        hwptDevice = nil
        h.destroy()
        hwpt = nil
        return problems.isEmpty ? nil : problems.joined(separator: "; ")
        #else
        return nil
        #endif
    }

    /// MADV_NOHUGEPAGE, then split_huge_pages over the range; both are tried, the first
    /// failure is the result and each call's own answer is a property.
    func thpSplit() -> (result: String, fill: Pattern?) {
        let nohuge = madvise(addr, Int(size), 15 /* MADV_NOHUGEPAGE */) == 0 ? "ok" : Self.errnoName()
        properties["nohugepage"] = nohuge
        let a = UInt(bitPattern: addr)
        let cmd = String(format: "%d,0x%lx,0x%lx", getpid(), a, a + UInt(size))
        let split = SplitHugePages.write(cmd)
        properties["split_huge_pages"] = "\(cmd): \(split)"
        return (nohuge != "ok" ? nohuge : split, nil)
    }

    func pageStates(_ region: String) -> [String] { ksmStates[region] ?? [] }

    /// VFIO_DMA_UNMAP_FLAG_VADDR, munmap, a memfd mapped at a new address, MAP_FLAG_VADDR.
    func vaddrUpdate(sameObject: Bool) -> (result: String, fill: Pattern?) {
        guard let vfio = session.container else { return ("no VFIO container", nil) }
        let len = Int(size)
        var fd: Int32, off = 0
        if sameObject {
            guard let b = backingFile() else { return ("map_files " + Self.errnoName(), nil) }
            (fd, off) = (b.fd, b.offset)
        } else {
            let huge = planned.kind == .memfdHugetlb2M
            fd = cvfio_memfd_create("vfio-exerciser-other", huge ? CVFIO_MFD_HUGETLB | CVFIO_MFD_HUGE_2MB : 0)
            guard fd >= 0 else { return ("memfd_create " + Self.errnoName(), nil) }
            fds.append(FDOwner(FileDescriptor(rawValue: fd)))
            guard ftruncate(fd, off_t(len)) == 0 else { return ("ftruncate " + Self.errnoName(), nil) }
        }
        switch vfio.unmap(iova: iova, size: size, flags: .vaddr) {
        case .success(let n) where n == size: break
        case .success(let n): return ("invalidate reported \(n) of \(size) bytes", nil)
        case .failure(let e): return (e.symbol, nil)
        }
        let m: MappedMemory
        do { m = try MappedMemory.map(length: len, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED, fd: fd, offset: off, alignment: 2 << 20) } catch {
            return ("mmap \(error)", nil)
        }
        owned.append(m)
        var fill: Pattern?
        if !sameObject { probe.cpuWrite(.fill, at: m.base); fill = .fill }
        let old = addr
        guard munmap(old, len) == 0 else { return ("munmap " + Self.errnoName(), nil) }
        placeholder(old)
        addr = m.base
        properties["moved_to"] = String(format: "0x%lx", UInt(bitPattern: m.base))
        switch vfio.map(vaddr: m.address, iova: iova, size: size, flags: .vaddr) {
        case .success: return ("ok", fill)
        case .failure(let e): return (e.symbol, fill)
        }
    }

    func undo(_ e: CaseEvent) -> String? {
        mprotect(addr, Int(size), PROT_READ | PROT_WRITE) == 0 ? nil : "mprotect(READ|WRITE): \(Self.errnoName())"
    }

    // MARK: the forked child: it only touches memory, on request over a pipe.

    enum ChildOp: Int64 { case write = 1, read = 2, exit = 3 }

    func fork() throws {
        var down: [Int32] = [0, 0], up: [Int32] = [0, 0]
        guard pipe(&down) == 0 else { throw EventStepError("pipe: \(Self.errnoName())") }
        guard pipe(&up) == 0 else { close(down[0]); close(down[1]); throw EventStepError("pipe: \(Self.errnoName())") }
        let pid = cvfio_fork()
        if pid == 0 {
            close(down[1]); close(up[0])
            childLoop(down[0], up[1])
            _exit(0)
        }
        close(down[0]); close(up[1])
        guard pid > 0 else { close(down[1]); close(up[0]); throw EventStepError("fork: \(Self.errnoName())") }
        child = (pid, down[1], up[0])
        properties["fork"] = "child \(pid)"
    }

    private func childLoop(_ rd: Int32, _ wr: Int32) {
        while true {
            var msg: (Int64, Int64) = (0, 0)
            guard Self.readAll(rd, &msg, MemoryLayout<(Int64, Int64)>.size) else { return }
            switch ChildOp(rawValue: msg.0) {
            case .write?:
                probe.cpuWrite(Pattern(Int(msg.1)), at: addr)
                var ack: UInt8 = 1
                _ = Self.writeAll(wr, &ack, 1)
            case .read?:
                var hits = probe.cpuReads(msg.1 < 0 ? nil : Pattern(Int(msg.1)), at: addr).map { UInt8($0 ? 1 : 0) }
                _ = Self.writeAll(wr, &hits, hits.count)
            default:
                return
            }
        }
    }

    static func readAll(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int) -> Bool {
        var off = 0
        while off < n {
            let r = read(fd, p + off, n - off)
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { return false }
            off += r
        }
        return true
    }

    static func writeAll(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Bool {
        var off = 0
        while off < n {
            let r = write(fd, p + off, n - off)
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { return false }
            off += r
        }
        return true
    }

    func ask(_ op: ChildOp, _ arg: Int64, reply: Int) throws -> [UInt8] {
        guard let c = child else { throw EventStepError("no child") }
        var msg: (Int64, Int64) = (op.rawValue, arg)
        guard Self.writeAll(c.toChild, &msg, MemoryLayout<(Int64, Int64)>.size) else { throw EventStepError("the child is gone") }
        var out = [UInt8](repeating: 0, count: reply)
        let ok = out.withUnsafeMutableBytes { Self.readAll(c.fromChild, $0.baseAddress!, reply) }
        guard ok else { throw EventStepError("the child died before answering: \(endChild() ?? "?")") }
        return out
    }

    func childWrite(_ p: Pattern) throws { _ = try ask(.write, Int64(p.offset), reply: 1) }
    func childReads(_ p: Pattern?) throws -> [Bool] { try ask(.read, Int64(p?.offset ?? -1), reply: probe.pages).map { $0 == 1 } }

    func endChild() -> String? {
        guard let c = child else { return nil }
        child = nil
        var msg: (Int64, Int64) = (ChildOp.exit.rawValue, 0)
        _ = Self.writeAll(c.toChild, &msg, MemoryLayout<(Int64, Int64)>.size)
        close(c.toChild)
        close(c.fromChild)
        var status: Int32 = 0
        var w: Int32 = -1
        for _ in 0..<500 {
            w = waitpid(c.pid, &status, WNOHANG)
            if w == c.pid || (w < 0 && errno != EINTR) { break }
            usleep(10_000)
        }
        if w != c.pid { kill(c.pid, SIGKILL); w = waitpid(c.pid, &status, 0) }
        if w != c.pid { return "waitpid(\(c.pid)): \(Self.errnoName())" }
        if status & 0x7f != 0 { return "the child was killed by SIG\(String(cString: cvfio_signal_name(status & 0x7f)))" }
        return status >> 8 == 0 ? nil : "the child exited with \(status >> 8)"
    }

    func unmap() -> String? {
        switch session.space.unmap(iova: iova, size: size) {
        case .success(let n):
            unmappedBytes = n
            return n == size ? nil : "UNMAP_DMA reported \(n) of \(size) bytes"
        case .failure(let e):
            return "UNMAP_DMA: \(e.symbol)"
        }
    }

    func release() -> Bool {
        // A step that failed half-way may leave tracking on or the NVMe on the HWPT.
        _ = dirtyStop()
        let ok = region.release()
        for m in owned { m.unmap() }
        for f in fds { f.close() }
        return ok
    }
}

extension Runner {
    /// A kind × event case: the kind's memory, one event after the map, both directions after it.
    func runEvent(_ event: CaseEvent) -> CaseRecord {
        // The mdev is its own device: it reaches memory only through vfio_pin_pages/vfio_dma_rw.
        if event == .dirtyPages, session.kind == .mdevPin, let pins = session.pins { return runMdevDirty(pins) }
        var rec = Self.record(planned, iova: 0, outcome: .ok)
        guard let engine = session.nvme else {
            rec.outcome = .skip("event cases need the NVMe data-check engine (every page, both directions): \(session.dmaUnavailable)")
            return rec
        }
        var debugfsMounted = false
        if event == .thpSplit {
            let d = SplitHugePages.prepare()
            guard d.available else {
                rec.outcome = .skip("no \(SplitHugePages.path) (CONFIG_DEBUG_FS and CONFIG_TRANSPARENT_HUGEPAGE)")
                return rec
            }
            debugfsMounted = d.mounted
        }
        defer { SplitHugePages.release(mounted: debugfsMounted) }
        if event == .ksmMerge && !KSM.available {
            rec.outcome = .skip("no \(KSM.dir): the kernel is built without CONFIG_KSM")
            return rec
        }
        // Locked memory before anything is built: mlock and the events themselves change it too.
        let acctStart = Accounting.read()
        guard let (region, iova) = buildRegion(instance: nil, &rec) else { return rec }
        let world: RealEventWorld
        do { world = try RealEventWorld(session: session, planned: planned, region: region, iova: iova, engine: engine) } catch {
            rec.outcome = .skip("\(error)")
            rec.cleanupOK = region.release()
            return rec
        }
        if event == .ksmMerge { world.makeTwin = { try self.buildTwin() } }
        let zones = PageInfo.zones()
        let pages = Int(region.size) / PageSize.base
        let before = PageInfo.pfns(region.vaddr, pages: pages)
        var pinned: [UInt64?] = []
        rec.properties["pages_before_map"] = PageInfo.describe(region.vaddr, pages: pages, zones: zones).text
        let acctBefore = Accounting.read()
        let thp = { (a: UnsafeMutableRawPointer) in Mem.smaps(for: UInt64(UInt(bitPattern: a)))["AnonHugePages"] ?? "?" }
        if planned.kind == .thp { rec.properties["thp_before"] = thp(world.addr) }
        // What MADV_COLLAPSE and the split did to the huge mappings, beside the PFNs.
        let thpEvent = [.madvCollapse, .thpSplit, .madvCollapsePteMapped].contains(event)

        // The executor runs the steps; pins and PFNs are read between them by the hooks below.
        let result = EventExecutor.run(event, world: PinObserver(world, onMapped: {
            pinned = PageInfo.pfns(region.vaddr, pages: pages)
            rec.properties["pages_pinned"] = PageInfo.describe(region.vaddr, pages: pages, zones: zones).text
            rec.properties["moved_at_pin"] = "\(PageInfo.moved(before, pinned)) of \(pages) pages"
            // FOLL_LONGTERM migrates pages out of ZONE_MOVABLE before pinning (d1e153fea2a8, 5.13).
            if let z = MovableCheck.zones(for: planned) {
                rec.checks += MovableCheck.checks(pinned, pinned: pages, zones: z, stride: MovableCheck.stride(planned.kind))
            }
            if thpEvent { rec.properties["thp_pinned"] = PageInfo.thpState(region.vaddr, pages: pages) }
            if let a = acctBefore, let b = Accounting.read() { rec.accountedBytes = Accounting.delta(a, b) }
            rec.iommuPageSize = session.iommuPageSize(iova: iova)
        }, onApplied: {
            let a = UInt64(UInt(bitPattern: world.addr))
            rec.properties["pages_after_event"] = PageInfo.describe(a, pages: pages, zones: zones).text
            if planned.kind == .thp { rec.properties["thp_after_event"] = thp(world.addr) }
            if thpEvent { rec.properties["thp_state_after_event"] = PageInfo.thpState(a, pages: pages) }
        }, onEnd: {
            let a = UInt64(UInt(bitPattern: world.addr))
            rec.properties["pages_at_end"] = PageInfo.describe(a, pages: pages, zones: zones).text
            rec.properties["pfn_changed_since_pin"] = "\(PageInfo.moved(pinned, PageInfo.pfns(a, pages: pages))) of \(pages) pages"
        }))
        rec.checks += world.checks
        Self.finish(&rec, result, world: world, engine: "nvme", acctStart: acctStart)
        return rec
    }

    /// What every event case's record takes from its world once the steps ran: the outcome, the
    /// observations, the unmap, the world's clean-up and locked memory back at its baseline.
    static func finish(_ rec: inout CaseRecord, _ result: EventResult, world: some CaseWorld, engine: String, acctStart: Accounting?) {
        rec.outcome = result.mapOutcome
        rec.mapNanos = world.mapNanos
        rec.observations = result.observations
        rec.checks += result.checks
        rec.unmappedBytes = world.unmappedBytes
        rec.properties.merge(world.properties) { $1 }
        rec.dataEngine = engine
        rec.cleanupOK = world.release()
        if result.mapOutcome == .ok, let a = acctStart, let c = Accounting.read() {
            let left = Accounting.delta(a, c)
            rec.checks.append(Check("accounting-restored", left == 0, left == 0 ? "locked/pinned memory back to its baseline" : "\(left) bytes still charged after unmap"))
        }
    }
}

/// A world an event case ran in, as its record reads it at the end.
protocol CaseWorld: AnyObject {
    var mapNanos: UInt64? { get }
    var unmappedBytes: UInt64? { get }
    var properties: [String: String] { get }
    func release() -> Bool
}

extension RealEventWorld: CaseWorld {}
extension MdevDirtyWorld: CaseWorld {}

/// Passes every call through, and runs hooks right after the map and after the event.
final class PinObserver: EventWorld {
    let w: EventWorld
    let onMapped: () -> Void
    let onApplied: () -> Void
    let onEnd: () -> Void
    init(_ w: EventWorld, onMapped: @escaping () -> Void, onApplied: @escaping () -> Void, onEnd: @escaping () -> Void) {
        self.w = w
        self.onMapped = onMapped
        self.onApplied = onApplied
        self.onEnd = onEnd
    }
    func cpuWrite(_ p: Pattern) throws { try w.cpuWrite(p) }
    func map() -> Outcome { let o = w.map(); if o == .ok { onMapped() }; return o }
    func deviceWrite(_ p: Pattern) throws { try w.deviceWrite(p) }
    func deviceReads(_ p: Pattern?) throws -> [Bool]? { try w.deviceReads(p) }
    func cpuReads(_ p: Pattern?) -> [Bool] { w.cpuReads(p) }
    func apply(_ e: CaseEvent) -> (result: String, fill: Pattern?) { let r = w.apply(e); onApplied(); return r }
    func undo(_ e: CaseEvent) -> String? { w.undo(e) }
    func fork() throws { try w.fork() }
    func childWrite(_ p: Pattern) throws { try w.childWrite(p) }
    func childReads(_ p: Pattern?) throws -> [Bool] { try w.childReads(p) }
    func endChild() -> String? { w.endChild() }
    func pageStates(_ region: String) -> [String] { w.pageStates(region) }
    func unmap() -> String? { onEnd(); return w.unmap() }
    func deviceWrite(_ p: Pattern, pages: [Int]) throws { try w.deviceWrite(p, pages: pages) }
    func dirtyInfo(_ e: CaseEvent) -> String { w.dirtyInfo(e) }
    func dirtyBitmap() -> Result<DirtyBitmap, Errno>? { w.dirtyBitmap() }
    /// A successful one is the case's unmap: the end-of-case PFNs are read then.
    func unmapGettingDirty() -> Result<(unmapped: UInt64, bitmap: DirtyBitmap), Errno> {
        let r = w.unmapGettingDirty()
        if case .success = r { onEnd() }
        return r
    }
    func dirtyStop() -> String? { w.dirtyStop() }
    var mappedSize: UInt64 { w.mappedSize }
    var pageCount: Int { w.pageCount }
}
