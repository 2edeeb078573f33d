import CVFIO
import SystemPackage

/// A dirty bitmap as type1 and iommufd hand it back: one bit per `pgsize` page of the range,
/// bit i in u64 word i / 64 at bit i % 64 (the kernel's unsigned long bitmap, little-endian).
public struct DirtyBitmap: Equatable, Sendable {
    public var pgsize: UInt64
    /// Pages the range covers (the bits that mean something).
    public var pages: Int
    public var words: [UInt64]
    /// The kernel wrote past the size it was given (a guard word after the bitmap changed).
    public var overrun = false

    /// The bytes the kernel requires for `pages` bits: whole u64 words (type1's DIRTY_BITMAP_BYTES).
    public static func bytes(pages: Int) -> Int { (pages + 63) / 64 * 8 }

    public init(pgsize: UInt64, pages: Int, words: [UInt64]? = nil) {
        self.pgsize = pgsize
        self.pages = pages
        self.words = words ?? Array(repeating: 0, count: Self.bytes(pages: pages) / 8)
    }

    public func isSet(_ i: Int) -> Bool { words[i / 64] >> UInt64(i % 64) & 1 == 1 }
    public mutating func set(_ i: Int) { words[i / 64] |= 1 << UInt64(i % 64) }
    public var setPages: [Int] { (0..<pages).filter(isSet) }
    /// Set bits past `pages` in the last word: the kernel must leave them clear.
    public var strayBits: Int {
        guard pages % 64 != 0, let last = words.last else { return 0 }
        return (last >> UInt64(pages % 64)).nonzeroBitCount
    }

    /// What the bitmap says of the pages a device wrote: `all`, `written` (exactly those),
    /// `none`, or `other` (anything else, stray bits included).
    public func classify(written: Set<Int>) -> String {
        let set = Set(setPages)
        if overrun || strayBits > 0 { return "other" }
        if set.count == pages && pages > 0 { return "all" }
        if set.isEmpty { return "none" }
        return set == written ? "written" : "other"
    }

    /// Runs `body` with a zeroed buffer for `pages` bits followed by guard words, and reads the
    /// bitmap back from it (the kernel requires user memory it can write, zeroed).
    static func withBuffer<R>(pgsize: UInt64, pages: Int, _ body: (UnsafeMutablePointer<UInt64>, UInt64) -> R) -> (R, DirtyBitmap) {
        let n = bytes(pages: pages) / 8
        let guardWords = 2
        let canary: UInt64 = 0xa5a5_5a5a_c3c3_3c3c
        let buf = UnsafeMutablePointer<UInt64>.allocate(capacity: n + guardWords)
        defer { buf.deallocate() }
        buf.initialize(repeating: 0, count: n)
        (buf + n).initialize(repeating: canary, count: guardWords)
        let r = body(buf, UInt64(n * 8))
        var bm = DirtyBitmap(pgsize: pgsize, pages: pages, words: Array(UnsafeBufferPointer(start: buf, count: n)))
        bm.overrun = (0..<guardWords).contains { buf[n + $0] != canary }
        return (r, bm)
    }
}

/// VFIO_IOMMU_DIRTY_PAGES's three operations (one flag at a time, as the kernel requires).
public enum DirtyPagesOp: Sendable {
    case start, stop

    var flag: UInt32 {
        switch self {
        case .start: return UInt32(VFIO_IOMMU_DIRTY_PAGES_FLAG_START)
        case .stop: return UInt32(VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP)
        }
    }
}

extension Container {
    /// VFIO_IOMMU_DIRTY_PAGES START or STOP.
    public func dirtyPages(_ op: DirtyPagesOp) -> Result<Void, Errno> {
        var d = vfio_iommu_type1_dirty_bitmap()
        d.flags = op.flag
        return Sys.ioctl(fd, CVFIO_IOMMU_DIRTY_PAGES, &d, argsz: \.argsz).map { _ in () }
    }

    /// VFIO_IOMMU_DIRTY_PAGES GET_BITMAP over [iova, iova + size) in `pgsize` pages:
    /// vfio_iommu_type1_dirty_bitmap followed by vfio_iommu_type1_dirty_bitmap_get.
    public func dirtyBitmap(iova: UInt64, size: UInt64, pgsize: UInt64) -> Result<DirtyBitmap, Errno> {
        let head = MemoryLayout<vfio_iommu_type1_dirty_bitmap>.size
        let total = head + MemoryLayout<vfio_iommu_type1_dirty_bitmap_get>.size
        let (r, bm) = DirtyBitmap.withBuffer(pgsize: pgsize, pages: Int(size / pgsize)) { data, bytes in
            let raw = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 8)
            defer { raw.deallocate() }
            var d = vfio_iommu_type1_dirty_bitmap()
            d.argsz = UInt32(total)
            d.flags = UInt32(VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP)
            raw.storeBytes(of: d, as: vfio_iommu_type1_dirty_bitmap.self)
            var g = vfio_iommu_type1_dirty_bitmap_get()
            g.iova = iova
            g.size = size
            g.bitmap.pgsize = pgsize
            g.bitmap.size = bytes
            g.bitmap.data = data
            (raw + head).storeBytes(of: g, as: vfio_iommu_type1_dirty_bitmap_get.self)
            return Sys.ioctl(fd, CVFIO_IOMMU_DIRTY_PAGES, raw)
        }
        return r.map { _ in bm }
    }

    /// UNMAP_DMA with VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: vfio_iommu_type1_dma_unmap followed
    /// by a vfio_bitmap. Returns the bytes unmapped and the bitmap.
    public func unmapGettingDirty(iova: UInt64, size: UInt64, pgsize: UInt64) -> Result<(unmapped: UInt64, bitmap: DirtyBitmap), Errno> {
        let head = MemoryLayout<vfio_iommu_type1_dma_unmap>.size
        let total = head + MemoryLayout<vfio_bitmap>.size
        var unmapped: UInt64 = 0
        let (r, bm) = DirtyBitmap.withBuffer(pgsize: pgsize, pages: Int(size / pgsize)) { data, bytes in
            let raw = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 8)
            defer { raw.deallocate() }
            var u = vfio_iommu_type1_dma_unmap()
            u.argsz = UInt32(total)
            u.flags = UInt32(VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP)
            u.iova = iova
            u.size = size
            raw.storeBytes(of: u, as: vfio_iommu_type1_dma_unmap.self)
            var b = vfio_bitmap()
            b.pgsize = pgsize
            b.size = bytes
            b.data = data
            (raw + head).storeBytes(of: b, as: vfio_bitmap.self)
            let r = Sys.ioctl(fd, CVFIO_IOMMU_UNMAP_DMA, raw)
            unmapped = raw.load(as: vfio_iommu_type1_dma_unmap.self).size
            return r
        }
        return r.map { _ in (unmapped, bm) }
    }
}
