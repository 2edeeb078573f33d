import CVFIO
import SystemPackage

public struct IOVARange: Codable, Sendable, Equatable {
    public var start: UInt64
    public var end: UInt64  // inclusive, as the kernel reports it
    public init(start: UInt64, end: UInt64) { self.start = start; self.end = end }
    public func contains(_ iova: UInt64, size: UInt64) -> Bool {
        size > 0 && iova >= start && iova <= end && size - 1 <= end - iova
    }
}

public struct MigrationCap: Codable, Sendable, Equatable {
    public var flags: UInt32
    public var pgsizeBitmap: UInt64
    public var maxDirtyBitmapSize: UInt64
    public init(flags: UInt32, pgsizeBitmap: UInt64, maxDirtyBitmapSize: UInt64) {
        self.flags = flags
        self.pgsizeBitmap = pgsizeBitmap
        self.maxDirtyBitmapSize = maxDirtyBitmapSize
    }
}

/// What VFIO_IOMMU_GET_INFO reports, capability chain included.
public struct IOMMUInfo: Codable, Sendable, Equatable {
    public var pageSizes: UInt64
    public var iovaRanges: [IOVARange]
    public var dmaAvail: UInt32?
    /// VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: the dirty-tracking page sizes and bitmap limit.
    public var migration: MigrationCap?

    public var smallestPage: UInt64 { pageSizes == 0 ? 4096 : pageSizes & (~pageSizes &+ 1) }

    static func query(_ fd: FileDescriptor) -> Result<IOMMUInfo, Errno> {
        // Ask once with the fixed part; the kernel grows argsz when caps follow.
        var argsz = MemoryLayout<vfio_iommu_type1_info>.size
        for _ in 0..<4 {
            var buf = [UInt8](repeating: 0, count: argsz)
            let r: Result<Int32, Errno> = buf.withUnsafeMutableBytes { raw in
                raw.storeBytes(of: UInt32(argsz), toByteOffset: 0, as: UInt32.self)
                return Sys.ioctl(fd, CVFIO_IOMMU_GET_INFO, raw.baseAddress)
            }
            if case .failure(let e) = r { return .failure(e) }
            let reported = Int(buf.withUnsafeBytes { $0.load(fromByteOffset: 0, as: UInt32.self) })
            if reported > argsz {
                argsz = reported
                continue
            }
            return .success(parse(buf))
        }
        return .failure(.resourceTemporarilyUnavailable)
    }

    /// Parses the reply; the capability walk is bounded by the buffer and a depth limit.
    public static func parse(_ buf: [UInt8]) -> IOMMUInfo {
        func u32(_ o: Int) -> UInt32? {
            o >= 0 && o + 4 <= buf.count ? buf.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt32.self) } : nil
        }
        func u64(_ o: Int) -> UInt64? {
            o >= 0 && o + 8 <= buf.count ? buf.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt64.self) } : nil
        }
        let flags = u32(MemoryLayout<vfio_iommu_type1_info>.offset(of: \.flags)!) ?? 0
        let pgsizes = (flags & UInt32(VFIO_IOMMU_INFO_PGSIZES)) != 0
            ? (u64(MemoryLayout<vfio_iommu_type1_info>.offset(of: \.iova_pgsizes)!) ?? 0) : 0
        var info = IOMMUInfo(pageSizes: pgsizes, iovaRanges: [], dmaAvail: nil)
        guard (flags & UInt32(VFIO_IOMMU_INFO_CAPS)) != 0,
              var off = u32(MemoryLayout<vfio_iommu_type1_info>.offset(of: \.cap_offset)!).map(Int.init) else { return info }
        let hdr = MemoryLayout<vfio_info_cap_header>.self
        var depth = 0
        while off != 0 && depth < 32, off + hdr.size <= buf.count {
            depth += 1
            let id = buf.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: off + hdr.offset(of: \.id)!, as: UInt16.self) }
            let next = Int(u32(off + hdr.offset(of: \.next)!) ?? 0)
            switch Int32(id) {
            case VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
                let cap = MemoryLayout<vfio_iommu_type1_info_cap_iova_range>.self
                let n = Int(u32(off + cap.offset(of: \.nr_iovas)!) ?? 0)
                let first = off + cap.size
                // The ranges end where the next capability starts, if one follows.
                let limit = next > off ? next : buf.count
                for i in 0..<min(n, 4096) {
                    let o = first + i * MemoryLayout<vfio_iova_range>.size
                    guard o + MemoryLayout<vfio_iova_range>.size <= limit, let s = u64(o), let e = u64(o + 8) else { break }
                    info.iovaRanges.append(IOVARange(start: s, end: e))
                }
            case VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION:
                let cap = MemoryLayout<vfio_iommu_type1_info_cap_migration>.self
                if let f = u32(off + cap.offset(of: \.flags)!), let p = u64(off + cap.offset(of: \.pgsize_bitmap)!),
                   let m = u64(off + cap.offset(of: \.max_dirty_bitmap_size)!) {
                    info.migration = MigrationCap(flags: f, pgsizeBitmap: p, maxDirtyBitmapSize: m)
                }
            case VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
                info.dmaAvail = u32(off + MemoryLayout<vfio_iommu_type1_info_dma_avail>.offset(of: \.avail)!)
            default:
                break
            }
            if next <= off { break }  // the chain only moves forward
            off = next
        }
        return info
    }
}
