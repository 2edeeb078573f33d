#if IOMMUFD_UAPI
import CVFIO
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// /dev/iommu. Owns the fd; objects created in it (IOAS) die with it.
public final class IOMMUFD {
    public let fd: FileDescriptor
    private var open = true

    public init(path: String = "/dev/iommu") throws(SysError) {
        fd = try Sys.open(path)
    }

    public func allocIOAS() throws(SysError) -> IOAS {
        var a = iommu_ioas_alloc()
        if case .failure(let e) = Sys.ioctl(fd, CVFIO_IOMMU_IOAS_ALLOC, &a, argsz: \.size) {
            throw SysError("IOMMU_IOAS_ALLOC", e)
        }
        return IOAS(iommufd: self, id: a.out_ioas_id)
    }

    /// IOMMU_GET_HW_INFO for a bound device: its out_capabilities (IOMMU_HW_CAP_*).
    public func hwCapabilities(devID: UInt32) -> Result<UInt64, Errno> {
        var h = iommu_hw_info()
        h.dev_id = devID
        return Sys.ioctl(fd, CVFIO_IOMMU_GET_HW_INFO, &h, argsz: \.size).map { _ in h.out_capabilities }
    }

    /// IOMMU_HWPT_ALLOC of a paging domain for `devID` over `ioas`; the errno is the result
    /// under test (a driver without the feature a flag asks for refuses it).
    public func allocHWPT(devID: UInt32, ioas: IOAS, flags: UInt32) -> Result<HWPT, Errno> {
        var a = iommu_hwpt_alloc()
        a.dev_id = devID
        a.pt_id = ioas.id
        a.flags = flags
        return Sys.ioctl(fd, CVFIO_IOMMU_HWPT_ALLOC, &a, argsz: \.size).map { _ in HWPT(iommufd: self, id: a.out_hwpt_id) }
    }

    func destroy(_ id: UInt32) {
        var d = iommu_destroy()
        d.id = id
        _ = Sys.ioctl(fd, CVFIO_IOMMU_DESTROY, &d, argsz: \.size)
    }

    public func close() {
        if open { try? fd.close(); open = false }
    }

    deinit { close() }
}

/// An I/O address space in an iommufd.
public final class IOAS: DMASpace {
    public let iommufd: IOMMUFD
    public let id: UInt32
    private var live = true

    init(iommufd: IOMMUFD, id: UInt32) {
        self.iommufd = iommufd
        self.id = id
    }

    /// VFIO's READ/WRITE bits in iommufd's terms; other bits pass through untouched.
    static func ioasFlags(_ raw: UInt32) -> UInt32 {
        var f = raw & ~(DMAFlags.read.rawValue | DMAFlags.write.rawValue)
        if raw & DMAFlags.read.rawValue != 0 { f |= IOMMU_IOAS_MAP_READABLE.rawValue }
        if raw & DMAFlags.write.rawValue != 0 { f |= IOMMU_IOAS_MAP_WRITEABLE.rawValue }
        return f | IOMMU_IOAS_MAP_FIXED_IOVA.rawValue
    }

    public func map(vaddr: UInt64, iova: UInt64, size: UInt64, flags: DMAFlags) -> Result<Void, Errno> {
        map(vaddr: vaddr, iova: iova, size: size, rawFlags: flags.rawValue)
    }

    public func map(vaddr: UInt64, iova: UInt64, size: UInt64, rawFlags: UInt32) -> Result<Void, Errno> {
        var m = iommu_ioas_map()
        m.flags = Self.ioasFlags(rawFlags)
        m.ioas_id = id
        m.user_va = vaddr
        m.length = size
        m.iova = iova
        return Sys.ioctl(iommufd.fd, CVFIO_IOMMU_IOAS_MAP, &m, argsz: \.size).map { _ in () }
    }

    /// IOMMU_IOAS_MAP_FILE (6.13+): map `length` bytes of a memfd (or dma-buf) at `start`.
    public func mapFile(fd: Int32, start: UInt64, length: UInt64, iova: UInt64, flags: DMAFlags) -> Result<Void, Errno> {
        var m = iommu_ioas_map_file()
        m.flags = Self.ioasFlags(flags.rawValue)
        m.ioas_id = id
        m.fd = fd
        m.start = start
        m.length = length
        m.iova = iova
        return Sys.ioctl(iommufd.fd, CVFIO_IOMMU_IOAS_MAP_FILE, &m, argsz: \.size).map { _ in () }
    }

    public func unmap(iova: UInt64, size: UInt64) -> Result<UInt64, Errno> {
        var u = iommu_ioas_unmap()
        u.ioas_id = id
        u.iova = iova
        u.length = size
        return Sys.ioctl(iommufd.fd, CVFIO_IOMMU_IOAS_UNMAP, &u, argsz: \.size).map { _ in u.length }
    }

    /// iova 0 and length UINT64_MAX is iommufd's "everything".
    public func unmapAll() -> Result<UInt64, Errno> {
        unmap(iova: 0, size: UInt64.max)
    }

    /// IOMMU_IOAS_IOVA_RANGES, asked once for the count and again with room for all of them.
    public func info() -> Result<IOMMUInfo, Errno> {
        var count: UInt32 = 0
        for _ in 0..<4 {
            var ranges = [iommu_iova_range](repeating: iommu_iova_range(), count: Int(count))
            var q = iommu_ioas_iova_ranges()
            q.ioas_id = id
            q.num_iovas = count
            let r: Result<Int32, Errno> = ranges.withUnsafeMutableBufferPointer { buf in
                q.allowed_iovas = UInt64(UInt(bitPattern: buf.baseAddress))
                return Sys.ioctl(iommufd.fd, CVFIO_IOMMU_IOAS_IOVA_RANGES, &q, argsz: \.size)
            }
            switch r {
            case .failure(.messageTooLong) where q.num_iovas > count:
                count = q.num_iovas
                continue
            case .failure(let e):
                return .failure(e)
            case .success:
                if q.num_iovas > count { count = q.num_iovas; continue }
                let list = ranges.prefix(Int(q.num_iovas)).map { IOVARange(start: $0.start, end: $0.last) }
                return .success(IOMMUInfo(pageSizes: q.out_iova_alignment, iovaRanges: list, dmaAvail: nil))
            }
        }
        return .failure(.resourceTemporarilyUnavailable)
    }

    public func mapInLimitedChild(iova: UInt64, size: UInt64, limit: UInt64) -> Result<UInt64, MemlockProbeError> {
        var unmapped: UInt64 = 0
        let r = cvfio_memlock_probe_ioas(iommufd.fd.rawValue, id, iova, size, limit, &unmapped)
        if r == 0 { return .success(unmapped) }
        if r > 0 { return .failure(.map(Errno(rawValue: r))) }
        return .failure(.setup(Errno(rawValue: -r)))
    }

    public func destroy() {
        if live { iommufd.destroy(id); live = false }
    }

    deinit { destroy() }
}

/// A hardware page table (IOMMU_HWPT_ALLOC); destroyed with the object's id.
public final class HWPT {
    public let iommufd: IOMMUFD
    public let id: UInt32
    private var live = true

    init(iommufd: IOMMUFD, id: UInt32) {
        self.iommufd = iommufd
        self.id = id
    }

    public static let dirtyTrackingFlag = IOMMU_HWPT_ALLOC_DIRTY_TRACKING.rawValue
    public static let dirtyTrackingCap = UInt64(IOMMU_HW_CAP_DIRTY_TRACKING.rawValue)

    /// IOMMU_HWPT_SET_DIRTY_TRACKING on or off.
    public func setDirtyTracking(_ on: Bool) -> Result<Void, Errno> {
        var s = iommu_hwpt_set_dirty_tracking()
        s.flags = on ? IOMMU_HWPT_DIRTY_TRACKING_ENABLE.rawValue : 0
        s.hwpt_id = id
        return Sys.ioctl(iommufd.fd, CVFIO_IOMMU_HWPT_SET_DIRTY_TRACKING, &s, argsz: \.size).map { _ in () }
    }

    /// IOMMU_HWPT_GET_DIRTY_BITMAP over [iova, iova + length) in `pgsize` pages (read and clear).
    public func dirtyBitmap(iova: UInt64, length: UInt64, pgsize: UInt64) -> Result<DirtyBitmap, Errno> {
        let (r, bm) = DirtyBitmap.withBuffer(pgsize: pgsize, pages: Int(length / pgsize)) { data, _ in
            var g = iommu_hwpt_get_dirty_bitmap()
            g.hwpt_id = id
            g.iova = iova
            g.length = length
            g.page_size = pgsize
            g.data = UInt64(UInt(bitPattern: data))
            return Sys.ioctl(iommufd.fd, CVFIO_IOMMU_HWPT_GET_DIRTY_BITMAP, &g, argsz: \.size)
        }
        return r.map { _ in bm }
    }

    public func destroy() {
        if live { iommufd.destroy(id); live = false }
    }

    deinit { destroy() }
}

extension Device {
    /// Opens a VFIO device cdev (/dev/vfio/devices/vfioN): no group, no container.
    public static func openCdev(_ path: String, name: String) throws(SysError) -> Device {
        Device(name: name, fd: try Sys.open(path))
    }

    public func bind(_ iommufd: IOMMUFD) throws(SysError) -> UInt32 {
        var b = vfio_device_bind_iommufd()
        b.iommufd = iommufd.fd.rawValue
        if case .failure(let e) = Sys.ioctl(fd, CVFIO_DEVICE_BIND_IOMMUFD, &b, argsz: \.argsz) {
            throw SysError("VFIO_DEVICE_BIND_IOMMUFD", e)
        }
        return b.out_devid
    }

    public func attach(_ ioas: IOAS) throws(SysError) {
        try attach(pt: ioas.id)
    }

    /// Attaches (or, attached already, replaces the attachment) to an IOAS or HWPT by id.
    public func attach(pt id: UInt32) throws(SysError) {
        var a = vfio_device_attach_iommufd_pt()
        a.pt_id = id
        if case .failure(let e) = Sys.ioctl(fd, CVFIO_DEVICE_ATTACH_IOMMUFD_PT, &a, argsz: \.argsz) {
            throw SysError("VFIO_DEVICE_ATTACH_IOMMUFD_PT", e)
        }
    }

    public func detach() {
        var d = vfio_device_detach_iommufd_pt()
        _ = Sys.ioctl(fd, CVFIO_DEVICE_DETACH_IOMMUFD_PT, &d, argsz: \.argsz)
    }

    /// VFIO_DEVICE_FEATURE_DMA_BUF: `length` bytes of BAR `index` from offset 0 as a dma-buf,
    /// whose fd the ioctl returns. ENOTTY where the UAPI header this was built with lacks it.
    public func exportDMABuf(region index: UInt32, length: UInt64) -> Result<Int32, Errno> {
        guard CVFIO_DEVICE_FEATURE_DMA_BUF != 0 else { return .failure(.inappropriateIOCTLForDevice) }
        // vfio_device_feature, then its payload: vfio_device_feature_dma_buf and one range.
        let head = MemoryLayout<vfio_device_feature>.size
        let body = MemoryLayout<vfio_device_feature_dma_buf>.size
        let total = head + body + MemoryLayout<vfio_region_dma_range>.size
        let raw = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 8)
        defer { raw.deallocate() }
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: total)
        var f = vfio_device_feature()
        f.argsz = UInt32(total)
        f.flags = CVFIO_DEVICE_FEATURE_GET | CVFIO_DEVICE_FEATURE_DMA_BUF
        raw.storeBytes(of: f, as: vfio_device_feature.self)
        var d = vfio_device_feature_dma_buf()
        d.region_index = index
        d.open_flags = UInt32(O_RDWR | O_CLOEXEC)
        d.nr_ranges = 1
        (raw + head).storeBytes(of: d, as: vfio_device_feature_dma_buf.self)
        var r = vfio_region_dma_range()
        r.offset = 0
        r.length = length
        (raw + head + body).storeBytes(of: r, as: vfio_region_dma_range.self)
        return Sys.ioctl(fd, CVFIO_DEVICE_FEATURE, raw)
    }
}
#endif
