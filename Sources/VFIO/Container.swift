import CVFIO
import SystemPackage

/// IOMMU model selected with VFIO_SET_IOMMU.
public enum IOMMUType: String, CaseIterable, Sendable, Codable {
    case type1, type1v2

    public var uapiValue: Int32 {
        switch self {
        case .type1: return VFIO_TYPE1_IOMMU
        case .type1v2: return VFIO_TYPE1v2_IOMMU
        }
    }
}

public struct DMAFlags: OptionSet, Sendable, Hashable, Codable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let read = DMAFlags(rawValue: UInt32(VFIO_DMA_MAP_FLAG_READ))
    public static let write = DMAFlags(rawValue: UInt32(VFIO_DMA_MAP_FLAG_WRITE))
    public static let vaddr = DMAFlags(rawValue: UInt32(VFIO_DMA_MAP_FLAG_VADDR))
    public static let readWrite: DMAFlags = [.read, .write]
}

public struct UnmapFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let all = UnmapFlags(rawValue: UInt32(VFIO_DMA_UNMAP_FLAG_ALL))
    public static let vaddr = UnmapFlags(rawValue: UInt32(VFIO_DMA_UNMAP_FLAG_VADDR))
}

/// A container fd: /dev/vfio/vfio, or /dev/iommu acting as one (iommufd compat).
/// Owns the fd; closing it drops every mapping still in it.
public final class Container {
    public let path: String
    public let fd: FileDescriptor
    private var open = true

    public init(path: String = "/dev/vfio/vfio") throws(SysError) {
        self.path = path
        self.fd = try Sys.open(path)
    }

    public func apiVersion() -> Result<Int32, Errno> {
        Sys.ioctl(fd, CVFIO_GET_API_VERSION, value: 0)
    }

    public func checkExtension(_ ext: Int32) -> Bool {
        (try? Sys.ioctl(fd, CVFIO_CHECK_EXTENSION, value: UInt(ext)).get()).map { $0 > 0 } ?? false
    }

    public func setIOMMU(_ type: IOMMUType) throws(SysError) {
        if case .failure(let e) = Sys.ioctl(fd, CVFIO_SET_IOMMU, value: UInt(type.uapiValue)) {
            throw SysError("VFIO_SET_IOMMU(\(type.rawValue))", e)
        }
    }

    /// Raw tier: the errno is the result under test.
    public func map(vaddr: UInt64, iova: UInt64, size: UInt64, flags: DMAFlags) -> Result<Void, Errno> {
        var m = vfio_iommu_type1_dma_map()
        m.flags = flags.rawValue
        m.vaddr = vaddr
        m.iova = iova
        m.size = size
        return Sys.ioctl(fd, CVFIO_IOMMU_MAP_DMA, &m, argsz: \.argsz).map { _ in () }
    }

    /// Raw flag bits, for the unknown-flag case.
    public func map(vaddr: UInt64, iova: UInt64, size: UInt64, rawFlags: UInt32) -> Result<Void, Errno> {
        map(vaddr: vaddr, iova: iova, size: size, flags: DMAFlags(rawValue: rawFlags))
    }

    /// Returns the byte count the kernel says it unmapped (written back into `size`).
    public func unmap(iova: UInt64, size: UInt64, flags: UnmapFlags = []) -> Result<UInt64, Errno> {
        var u = vfio_iommu_type1_dma_unmap()
        u.flags = flags.rawValue
        u.iova = iova
        u.size = size
        return Sys.ioctl(fd, CVFIO_IOMMU_UNMAP_DMA, &u, argsz: \.argsz).map { _ in u.size }
    }

    public func info() -> Result<IOMMUInfo, Errno> {
        IOMMUInfo.query(fd)
    }

    /// Lowers RLIMIT_MEMLOCK in a child without CAP_IPC_LOCK and maps `size` bytes there.
    /// Returns the map outcome and, on success, the bytes the child's unmap reported.
    public func mapInLimitedChild(iova: UInt64, size: UInt64, limit: UInt64) -> Result<UInt64, MemlockProbeError> {
        var unmapped: UInt64 = 0
        let r = cvfio_memlock_probe(fd.rawValue, iova, size, limit, &unmapped)
        if r == 0 { return .success(unmapped) }
        if r > 0 { return .failure(.map(Errno(rawValue: r))) }
        return .failure(.setup(Errno(rawValue: -r)))
    }

    public func close() {
        if open { try? fd.close(); open = false }
    }

    deinit { close() }
}

public enum MemlockProbeError: Error, Equatable {
    case map(Errno)
    case setup(Errno)
}
