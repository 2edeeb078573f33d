import Foundation
import SystemPackage
import VFIO

/// dirty-pages in a container holding only the test module's mdev (mdev-pin). Its group is in
/// type1's "pinned page dirty scope": the kernel knows what the device touched, because an mdev
/// can reach memory only through vfio_pin_pages() and vfio_dma_rw(). So the device's write here
/// is: pin each chosen page (vfio_pin_pages, write), then write it with vfio_dma_rw(). Patterns
/// are made here (no NVMe namespace): page i of pattern p is a byte ramp no other page shares.
final class MdevDirtyWorld: EventWorld {
    let session: Session
    let planned: PlannedCase
    let pins: ExternalPins
    let region: Region
    let iova: UInt64
    let size: UInt64
    let page = PageSize.base
    var properties: [String: String] = [:]
    var unmappedBytes: UInt64?
    var mapNanos: UInt64?
    var tracking = false
    /// Pages pinned one by one (the module unpins each PIN exactly, or all at unmap).
    var pinned: [Int] = []
    var mapped = false

    init(session: Session, planned: PlannedCase, pins: ExternalPins, region: Region, iova: UInt64) {
        self.session = session
        self.planned = planned
        self.pins = pins
        self.region = region
        self.iova = iova
        size = region.size
    }

    var mappedSize: UInt64 { size }
    var pageCount: Int { Int(size) / page }

    static func fill(_ p: Pattern, page i: Int, into b: UnsafeMutableRawBufferPointer) {
        let seed = UInt32(truncatingIfNeeded: p.offset &* 7919 &+ i &* 104_729)
        for j in 0..<b.count / 4 { b.storeBytes(of: seed &+ UInt32(j) &* 2_654_435_761, toByteOffset: j * 4, as: UInt32.self) }
    }

    func expected(_ p: Pattern?, page i: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: page)
        if let p { b.withUnsafeMutableBytes { Self.fill(p, page: i, into: $0) } }
        return b
    }

    func cpuWrite(_ p: Pattern) throws {
        for i in 0..<pageCount { Self.fill(p, page: i, into: UnsafeMutableRawBufferPointer(start: region.pointer + i * page, count: page)) }
    }

    func cpuReads(_ p: Pattern?) -> [Bool] {
        (0..<pageCount).map { i in expected(p, page: i).withUnsafeBytes { memcmp(region.pointer + i * page, $0.baseAddress!, page) == 0 } }
    }

    func map() -> Outcome {
        let t = monotonicNanos()
        let r = session.space.map(vaddr: region.vaddr, iova: iova, size: size, flags: planned.dmaFlags)
        mapNanos = monotonicNanos() - t
        if case .success = r { mapped = true }
        return Outcome(r)
    }

    func deviceWrite(_ p: Pattern) throws { try deviceWrite(p, pages: Array(0..<pageCount)) }

    func deviceWrite(_ p: Pattern, pages list: [Int]) throws {
        for i in list {
            let at = iova + UInt64(i * page)
            switch pins.pin(iova: at, pages: 1, write: true) {
            case .success(let n) where n == 1: pinned.append(i)
            case .success(let n): throw EventStepError("vfio_pin_pages of page \(i) pinned \(n)")
            case .failure(let e): throw EventStepError("vfio_pin_pages of page \(i): \(e.symbol)")
            }
            var b = expected(p, page: i)
            if case .failure(let e) = b.withUnsafeMutableBytes({ pins.rw(iova: at, buffer: $0, write: true) }) {
                throw EventStepError("vfio_dma_rw write of page \(i): \(e.symbol)")
            }
        }
    }

    /// Reads through vfio_dma_rw (which marks nothing dirty).
    func deviceReads(_ p: Pattern?) throws -> [Bool]? {
        var b = [UInt8](repeating: 0, count: page)
        return try (0..<pageCount).map { i in
            if case .failure(let e) = b.withUnsafeMutableBytes({ pins.rw(iova: iova + UInt64(i * page), buffer: $0, write: false) }) {
                throw EventStepError("vfio_dma_rw read of page \(i): \(e.symbol)")
            }
            return b == expected(p, page: i)
        }
    }

    func apply(_ e: CaseEvent) -> (result: String, fill: Pattern?) {
        guard e == .dirtyPages, let vfio = session.container else { return ("not an mdev event", nil) }
        switch vfio.dirtyPages(.start) {
        case .success: tracking = true; return ("ok", nil)
        case .failure(let err): return (err.symbol, nil)
        }
    }

    func undo(_ e: CaseEvent) -> String? { nil }
    func fork() throws { throw EventStepError("no fork in the mdev world") }
    func childWrite(_ p: Pattern) throws { throw EventStepError("no child in the mdev world") }
    func childReads(_ p: Pattern?) throws -> [Bool] { throw EventStepError("no child in the mdev world") }
    func endChild() -> String? { nil }

    func dirtyInfo(_ e: CaseEvent) -> String {
        guard let vfio = session.container else { return "absent" }
        switch vfio.info() {
        case .failure(let err): return err.symbol
        case .success(let i): return i.migration.map { "pgsize=\($0.pgsizeBitmap),max_bitmap=\($0.maxDirtyBitmapSize)" } ?? "absent"
        }
    }

    func dirtyBitmap() -> Result<DirtyBitmap, Errno>? {
        session.container?.dirtyBitmap(iova: iova, size: size, pgsize: UInt64(page))
    }

    func unmapGettingDirty() -> Result<(unmapped: UInt64, bitmap: DirtyBitmap), Errno> {
        guard let vfio = session.container else { return .failure(.notSupported) }
        let r = vfio.unmapGettingDirty(iova: iova, size: size, pgsize: UInt64(page))
        if case .success(let u) = r {
            unmappedBytes = u.unmapped
            mapped = false
            pinned = []  // the unmap's .dma_unmap callback unpinned them
        }
        return r
    }

    func dirtyStop() -> String? {
        guard tracking, let vfio = session.container else { return nil }
        tracking = false
        if case .failure(let e) = vfio.dirtyPages(.stop) { return "VFIO_IOMMU_DIRTY_PAGES STOP: \(e.symbol)" }
        return nil
    }

    func unmap() -> String? {
        switch session.space.unmap(iova: iova, size: size) {
        case .success(let n):
            unmappedBytes = n
            mapped = false
            pinned = []
            return n == size ? nil : "UNMAP_DMA reported \(n) of \(size) bytes"
        case .failure(let e):
            return "UNMAP_DMA: \(e.symbol)"
        }
    }

    /// Pins left by a step that failed before any unmap, then the region.
    func release() -> Bool {
        _ = dirtyStop()
        var ok = true
        for i in pinned { if case .failure = pins.unpin(iova: iova + UInt64(i * page), pages: 1) { ok = false } }
        pinned = []
        if mapped, case .failure = session.space.unmap(iova: iova, size: size) { ok = false }
        return region.release() && ok
    }
}

extension Runner {
    /// dirty-pages on mdev-pin: the test module's mdev is the device (no NVMe in its container).
    func runMdevDirty(_ pins: ExternalPins) -> CaseRecord {
        var rec = Self.record(planned, iova: 0, outcome: .ok)
        let acctStart = Accounting.read()
        guard let (region, iova) = buildRegion(instance: nil, &rec) else { return rec }
        let world = MdevDirtyWorld(session: session, planned: planned, pins: pins, region: region, iova: iova)
        let result = EventExecutor.run(.dirtyPages, world: world)
        Self.finish(&rec, result, world: world, engine: "mdev vfio_dma_rw", acctStart: acctStart)
        return rec
    }
}
