import CVFIO
import Foundation
import SystemPackage
import VFIO

/// Runs one planned case in a session and measures everything the kernel hands back.
struct Runner {
    let session: Session
    let planned: PlannedCase
    let index: Int

    var container: DMASpace { session.space }

    static func record(_ c: PlannedCase, iova: UInt64, outcome: Outcome) -> CaseRecord {
        var r = CaseRecord(id: c.id, backend: c.backend.rawValue, kind: c.kind.rawValue, phase: c.phase,
                           size: c.size, flags: c.flags, iova: iova, outcome: outcome)
        r.event = c.event?.rawValue  // events (issue 13)
        return r
    }

    /// The case itself; the engine adds what it observes from outside (kernel log, leftovers).
    func run() -> CaseRecord {
        Injection.apply(session.options.inject, at: .start, case: planned, session: session)
        if let e = planned.event { return runEvent(e) }  // events (issue 13): Events/EventRunner.swift
        return planned.kind.isEdge ? runEdge() : runRegion()
    }

    // MARK: region kinds

    /// The case's region and an IOVA for it; nil with `rec` saying why (a skip) when either is
    /// missing. The region is released again if no IOVA is left.
    func buildRegion(instance: String?, _ rec: inout CaseRecord) -> (Region, UInt64)? {
        guard let backing = Backings.backing(for: planned.kind) else {
            rec.outcome = .skip("no backing for \(planned.kind.rawValue)")
            return nil
        }
        let region: Region
        do {
            region = try backing.build(size: planned.size, instance: instance, context: regionContext())
        } catch {
            rec.outcome = .skip("\(error)")
            return nil
        }
        rec.size = region.size
        rec.properties = region.properties
        guard let iova = session.iova.allocate(region.size) else {
            rec.outcome = .skip("no free IOVA for \(formatSize(region.size))")
            rec.cleanupOK = region.release()
            return nil
        }
        rec.iova = iova
        return (region, iova)
    }

    /// Another region of the case's kind, unpinned and not in the record (ksm-merge's twin).
    func buildTwin() throws -> Region {
        guard let backing = Backings.backing(for: planned.kind) else { throw RegionUnavailable("no backing for \(planned.kind.rawValue)") }
        return try backing.build(size: planned.size, instance: nil, context: regionContext())
    }

    func regionContext() -> RegionContext {
        let o = session.options
        var ctx = RegionContext(bars: session.bars, fsDir: o.fsDir, tmpfsDir: o.tmpfsDir, fsdaxDir: o.fsdaxDir, devdax: o.devdax)
        ctx.peer = session.peer
        return ctx
    }

    func runRegion() -> CaseRecord {
        var rec = Self.record(planned, iova: 0, outcome: .ok)
        guard let (region, iova) = buildRegion(instance: planned.instance, &rec) else { return rec }
        rec.iova = iova
        let acctBefore = Accounting.read()
        let zones = MovableCheck.zones(for: planned)
        let before = zones.map { _ in PageInfo.pfns(region.vaddr, pages: Int(region.size) / PageSize.base) }
        let t0 = monotonicNanos()
        let result: Result<Void, Errno>
        if planned.kind.mapsByFile {
            guard let f = region.file,
                  let r = session.backend.mapFile(fd: f.fd, start: f.offset, length: region.size, iova: iova, flags: planned.dmaFlags) else {
                rec.outcome = .skip("IOMMU_IOAS_MAP_FILE needs an iommufd IOAS and a file-backed region")
                rec.cleanupOK = region.release()
                return rec
            }
            result = r
        } else {
            result = container.map(vaddr: region.vaddr, iova: iova, size: region.size, flags: planned.dmaFlags)
        }
        rec.mapNanos = monotonicNanos() - t0
        rec.outcome = Outcome(result)
        // mdev-pin: the map pinned nothing; the outcome under test is the external pin.
        var pinnedPages = 0
        if case .success = result, let pins = session.pins {
            rec.properties["map"] = "ok"
            pinnedPages = min(Int(region.size) / PageSize.base, ExternalPins.maxPages)
            switch pins.pin(iova: iova, pages: pinnedPages, write: planned.dmaFlags.contains(.write)) {
            case .success(let n):
                rec.properties["pinned_pages"] = "\(n) of \(pinnedPages)"
                if Int(n) != pinnedPages { rec.checks.append(Check("pin-count", false, "vfio_pin_pages pinned \(n) of \(pinnedPages) pages")) }
            case .failure(let e):
                rec.outcome = .errno(e.symbol)
                pinnedPages = 0
            }
        }
        if rec.outcome == .ok {
            Injection.apply(session.options.inject, at: .mapped, case: planned, session: session)
            if let a = acctBefore, let b = Accounting.read() { rec.accountedBytes = Accounting.delta(a, b) }
            rec.iommuPageSize = session.iommuPageSize(iova: iova)
            if let zones, let before {
                let pinned = session.pins == nil ? Int(region.size) / PageSize.base : pinnedPages
                MovableCheck.record(&rec, vaddr: region.vaddr, before: before, pinned: pinned, zones: zones,
                                    stride: MovableCheck.stride(planned.kind))
            }
            let dataStart = monotonicNanos()
            if planned.kind.targetsPeer, case .success(let peer) = session.peer {
                let (checks, summary) = PeerCheck.run(engines: session.engines.filter { $0 !== session.peerEngine }, scratch: session.scratch, scratchIOVA: session.scratchIOVA,
                                                      peer: peer, iova: iova, why: session.dmaUnavailable)
                rec.checks += checks
                rec.properties["data"] = summary
            } else if let nvme = session.nvme, !region.access.isNone || session.engines.isEmpty {
                var check = NVMeCheck(engine: nvme, seed: index &* 37 &+ 11)
                if session.options.inject == "wrong-iova" { check.wrongIOVA = nvme.decoy.iova }
                if session.options.inject == "swap-prp" { check.swapPRP = true }
                let (checks, summary, notes) = check.runWithNotes(region: region, iova: iova, flags: planned.dmaFlags)
                rec.checks += checks
                rec.properties["data"] = summary
                if !notes.isEmpty { rec.properties["data_unchecked"] = notes.joined(separator: "; ") }
                rec.dataEngine = "nvme"
                let unit = UInt64(PageSize.base)
                rec.dataBytes = summary.hasPrefix("ok") ? region.access.checkable(of: region.size) / unit * unit : 0
            } else if !session.engines.isEmpty, let scratch = session.scratch {
                var check = DataCheck(engines: session.engines, scratch: scratch, scratchIOVA: session.scratchIOVA, seed: UInt8(truncatingIfNeeded: index &* 37 &+ 11))
                if session.options.inject == "wrong-iova" { check.wrongIOVA = session.scratchIOVA }
                let (checks, summary) = check.run(region: region, iova: iova, flags: planned.dmaFlags)
                rec.checks += checks
                rec.properties["data"] = summary
                rec.dataEngine = session.engines[0].name
                let pages = DataCheck.pages(size: region.access.checkable(of: region.size), page: PageSize.base).count
                rec.dataBytes = summary.hasPrefix("ok") ? UInt64(pages * min(session.engines[0].bufferSize, PageSize.base)) : 0
            } else {
                rec.properties["data"] = "not checkable: \(session.dmaUnavailable)"
            }
            if rec.properties["data"]?.hasPrefix("not checkable") == true { rec.dataEngine = nil; rec.dataBytes = nil }
            if rec.dataEngine != nil { rec.dataNanos = monotonicNanos() - dataStart }
            if pinnedPages > 0, let pins = session.pins, case .failure(let e) = pins.unpin(iova: iova, pages: pinnedPages) {
                rec.checks.append(Check("unpin", false, "UNPIN: \(e.symbol)"))
            }
            let t1 = monotonicNanos()
            let u = container.unmap(iova: iova, size: region.size)
            rec.unmapNanos = monotonicNanos() - t1
            switch u {
            case .success(let n): rec.unmappedBytes = n
            case .failure(let e): rec.checks.append(Check("unmap", false, "VFIO_IOMMU_UNMAP_DMA: \(e.symbol)"))
            }
            if let a = acctBefore, let c = Accounting.read() {
                let left = Accounting.delta(a, c)
                rec.checks.append(Check("accounting-restored", left == 0,
                                        left == 0 ? "locked/pinned memory back to its baseline" : "\(left) bytes still charged after unmap"))
            }
        } else if case .success = result {
            // The map succeeded but the pin was refused: the mapping must still unmap whole.
            let u = container.unmap(iova: iova, size: region.size)
            rec.checks.append(Check("unmap-after-refused-pin", (try? u.get()) == region.size,
                                    "unmap reported \((try? u.get()).map(String.init) ?? "an error") of \(region.size) bytes"))
        } else {
            // A refused map must leave nothing behind: unmapping the range finds 0 bytes.
            if case .success(let n) = container.unmap(iova: iova, size: region.size) {
                rec.checks.append(Check("refused-map-left-nothing", n == 0, n == 0 ? "0 bytes to unmap" : "\(n) bytes were still mapped"))
            }
        }
        rec.cleanupOK = region.release()
        return rec
    }

    // MARK: argument edges

    func anon(_ size: UInt64) -> MappedMemory? {
        guard let m = try? MappedMemory.map(length: Int(size), prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS) else { return nil }
        memset(m.base, 0x5a, m.length)
        return m
    }

    /// Maps `m` at `iova` as setup for an edge; the setup must succeed for the edge to mean anything.
    func setupMap(_ m: MappedMemory, _ iova: UInt64, _ rec: inout CaseRecord) -> Bool {
        if case .failure(let e) = container.map(vaddr: m.address, iova: iova, size: UInt64(m.length), flags: .readWrite) {
            rec.outcome = .skip("setup map failed: \(e.symbol)")
            return false
        }
        return true
    }

    /// Unmaps a setup mapping and checks the byte count.
    func teardownMap(_ iova: UInt64, _ size: UInt64, _ rec: inout CaseRecord, name: String = "setup-unmap") {
        switch container.unmap(iova: iova, size: size) {
        case .success(let n): rec.checks.append(Check(name, n == size, "unmapped \(n) of \(size) bytes"))
        case .failure(let e): rec.checks.append(Check(name, false, "VFIO_IOMMU_UNMAP_DMA: \(e.symbol)"))
        }
    }

    func runEdge() -> CaseRecord {
        var rec = Self.record(planned, iova: 0, outcome: .ok)
        let size = planned.size == 0 && planned.kind != .sizeZero ? UInt64(64 << 10) : planned.size
        guard let m = anon(max(size, 64 << 10)), let iova = session.iova.allocate(max(size, 64 << 10)) else {
            rec.outcome = .skip("cannot allocate memory or IOVA for the edge")
            return rec
        }
        defer { m.unmap() }
        rec.iova = iova
        let flags = planned.dmaFlags
        let timed = { (body: () -> Result<Void, Errno>) -> Outcome in
            let t = monotonicNanos()
            let r = body()
            rec.mapNanos = monotonicNanos() - t
            return Outcome(r)
        }
        // Cleans up if an edge the kernel should refuse was accepted anyway.
        func unmapIfAccepted(_ at: UInt64, _ len: UInt64) {
            if rec.outcome == .ok, case .success(let n) = container.unmap(iova: at, size: len) { rec.unmappedBytes = n }
        }
        switch planned.kind {
        case .unalignedVaddr:
            rec.size = size / 2
            rec.outcome = timed { container.map(vaddr: m.address + 0x800, iova: iova, size: size / 2, flags: flags) }
            unmapIfAccepted(iova, size / 2)
        case .sizeZero:
            rec.size = 0
            rec.outcome = timed { container.map(vaddr: m.address, iova: iova, size: 0, flags: flags) }
        case .flagsNone:
            rec.flags = []
            rec.outcome = timed { container.map(vaddr: m.address, iova: iova, size: size, flags: []) }
            unmapIfAccepted(iova, size)
        case .flagsUnknown:
            rec.properties["raw_flags"] = "0x103"
            rec.outcome = timed { container.map(vaddr: m.address, iova: iova, size: size, rawFlags: flags.rawValue | 0x100) }
            unmapIfAccepted(iova, size)
        case .iovaOverlap:
            guard setupMap(m, iova, &rec), let m2 = anon(size) else { return rec }
            defer { m2.unmap() }
            rec.iova = iova + size / 2
            rec.outcome = timed { container.map(vaddr: m2.address, iova: iova + size / 2, size: size, flags: flags) }
            unmapIfAccepted(iova + size / 2, size)
            teardownMap(iova, size, &rec, name: "first-mapping-unmap")
        case .iovaOutOfRange:
            guard let bad = session.iova.outside(size: size) else {
                rec.outcome = .skip("VFIO_IOMMU_GET_INFO reported no IOVA gap to aim at")
                return rec
            }
            rec.iova = bad
            rec.properties["valid_ranges"] = session.info.iovaRanges.map { String(format: "0x%llx-0x%llx", $0.start, $0.end) }.joined(separator: ",")
            rec.outcome = timed { container.map(vaddr: m.address, iova: bad, size: size, flags: flags) }
            unmapIfAccepted(bad, size)
        case .memlockLimit:
            let limit: UInt64 = 1 << 20
            rec.properties["rlimit_memlock"] = formatSize(limit)
            let t = monotonicNanos()
            let r = container.mapInLimitedChild(iova: iova, size: size, limit: limit)
            rec.mapNanos = monotonicNanos() - t
            switch r {
            case .success(let n): rec.outcome = .ok; rec.unmappedBytes = n
            case .failure(.map(let e)): rec.outcome = .errno(e.symbol)
            case .failure(.setup(let e)): rec.outcome = .skip("could not set up the limited child: \(e.symbol)")
            }
        case .vaddrUpdate:
            guard let vfio = session.container else {
                rec.outcome = .skip("iommufd has no VFIO_DMA_MAP_FLAG_VADDR (its analogue is IOMMU_IOAS_CHANGE_PROCESS)")
                return rec
            }
            rec.properties["VFIO_UPDATE_VADDR"] = vfio.checkExtension(VFIO_UPDATE_VADDR) ? "yes" : "no"
            guard setupMap(m, iova, &rec) else { return rec }
            switch vfio.unmap(iova: iova, size: size, flags: .vaddr) {
            case .success(let n):
                rec.checks.append(Check("vaddr-invalidate", n == size, "UNMAP_FLAG_VADDR reported \(n) of \(size) bytes"))
                rec.outcome = timed { vfio.map(vaddr: m.address, iova: iova, size: size, flags: .vaddr) }
            case .failure(let e):
                // The invalidate step is the one under test when the kernel refuses it.
                rec.properties["step"] = "invalidate"
                rec.outcome = .errno(e.symbol)
            }
            let t = monotonicNanos()
            if case .success(let n) = container.unmap(iova: iova, size: size) { rec.unmappedBytes = n }
            rec.unmapNanos = monotonicNanos() - t
            if rec.outcome != .ok { rec.checks.append(Check("cleanup-unmap", rec.unmappedBytes == size, "unmapped \(rec.unmappedBytes ?? 0) of \(size)")) }
        case .unmapSubrange:
            guard setupMap(m, iova, &rec) else { return rec }
            let half = size / 2
            let t = monotonicNanos()
            let r = container.unmap(iova: iova + half, size: half)
            rec.unmapNanos = monotonicNanos() - t
            var first: UInt64 = 0
            switch r {
            case .success(let n): rec.outcome = .ok; first = n; rec.unmappedBytes = n
            case .failure(let e): rec.outcome = .errno(e.symbol)
            }
            rec.properties["subrange"] = "second half, \(formatSize(half))"
            let rest: UInt64 = (try? container.unmap(iova: iova, size: size).get()) ?? 0
            rec.checks.append(Check("all-bytes-accounted", first + rest == size,
                                    "sub-range unmap \(first) + clean-up unmap \(rest) = \(first + rest) of \(size) bytes"))
        case .unmapAll:
            if let vfio = session.container { rec.properties["VFIO_UNMAP_ALL"] = vfio.checkExtension(VFIO_UNMAP_ALL) ? "yes" : "no" }
            guard setupMap(m, iova, &rec), let m2 = anon(size), let iova2 = session.iova.allocate(size) else { return rec }
            defer { m2.unmap() }
            guard setupMap(m2, iova2, &rec) else { teardownMap(iova, size, &rec); return rec }
            rec.size = 2 * size
            let t = monotonicNanos()
            let r = container.unmapAll()
            rec.unmapNanos = monotonicNanos() - t
            switch r {
            case .success(let n):
                rec.outcome = .ok
                rec.unmappedBytes = n
                // The scratch page is in the container too; UNMAP_ALL took it. Put it back.
                session.remapScratch(&rec)
                session.remapNVMe(&rec)
            case .failure(let e):
                rec.outcome = .errno(e.symbol)
                teardownMap(iova, size, &rec)
                teardownMap(iova2, size, &rec)
            }
        case .dmaEntryLimit:  // events (issue 13): Events/DMAEntryLimit.swift
            rec = DMAEntryLimit.run(planned, rec, backend: planned.backend)
        default:
            rec.outcome = .skip("\(planned.kind.rawValue) is not an edge")
        }
        return rec
    }
}

extension Session {
    /// Restores the scratch mapping after UNMAP_ALL and discounts it from the reported bytes.
    func remapScratch(_ rec: inout CaseRecord) {
        guard let s = scratch else { return }
        rec.unmappedBytes = rec.unmappedBytes.map { $0 >= UInt64(s.length) ? $0 - UInt64(s.length) : $0 }
        rec.properties["scratch_page_included"] = "yes"
        if case .failure(let e) = space.map(vaddr: s.address, iova: scratchIOVA, size: UInt64(s.length), flags: .readWrite) {
            rec.checks.append(Check("scratch-remap", false, "re-mapping the scratch page failed: \(e.symbol)"))
            engines = []
            dmaUnavailable = "scratch page lost after UNMAP_ALL"
        }
    }

    /// UNMAP_ALL also took the NVMe queues and reference window (the controller is idle between
    /// commands): map them again and discount them.
    func remapNVMe(_ rec: inout CaseRecord) {
        guard let m = nvmeMemory else { return }
        let (bytes, problems) = m.remap()
        rec.unmappedBytes = rec.unmappedBytes.map { $0 >= bytes ? $0 - bytes : $0 }
        rec.properties["nvme_memory_included"] = "yes"
        for p in problems { rec.checks.append(Check("nvme-remap", false, p)) }
    }
}
