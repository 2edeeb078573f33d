import CVFIO
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

public struct RegionInfo: Sendable, Equatable, Codable {
    public var index: UInt32
    public var flags: UInt32
    public var size: UInt64
    public var offset: UInt64
    public var mmappable: Bool { flags & UInt32(VFIO_REGION_INFO_FLAG_MMAP) != 0 }
    public var readable: Bool { flags & UInt32(VFIO_REGION_INFO_FLAG_READ) != 0 }
    public var writable: Bool { flags & UInt32(VFIO_REGION_INFO_FLAG_WRITE) != 0 }
}

/// A device fd from VFIO_GROUP_GET_DEVICE_FD (or a cdev). Close it before its group.
public final class Device {
    public let name: String
    public let fd: FileDescriptor
    private var open = true

    init(name: String, fd: FileDescriptor) {
        self.name = name
        self.fd = fd
    }

    public func info() throws(SysError) -> (flags: UInt32, regions: UInt32, irqs: UInt32) {
        var i = vfio_device_info()
        if case .failure(let e) = Sys.ioctl(fd, CVFIO_DEVICE_GET_INFO, &i, argsz: \.argsz) {
            throw SysError("VFIO_DEVICE_GET_INFO", e)
        }
        return (i.flags, i.num_regions, i.num_irqs)
    }

    public func regionInfo(_ index: UInt32) throws(SysError) -> RegionInfo {
        var r = vfio_region_info()
        r.index = index
        if case .failure(let e) = Sys.ioctl(fd, CVFIO_DEVICE_GET_REGION_INFO, &r, argsz: \.argsz) {
            throw SysError("VFIO_DEVICE_GET_REGION_INFO(\(index))", e)
        }
        return RegionInfo(index: index, flags: r.flags, size: r.size, offset: r.offset)
    }

    /// Every PCI BAR region (0...5) that has a size.
    public func bars() throws(SysError) -> [RegionInfo] {
        var out: [RegionInfo] = []
        for i in UInt32(VFIO_PCI_BAR0_REGION_INDEX)...UInt32(VFIO_PCI_BAR5_REGION_INDEX) {
            let r = try regionInfo(i)
            if r.size > 0 { out.append(r) }
        }
        return out
    }

    public func mmap(_ region: RegionInfo, prot: Int32 = PROT_READ | PROT_WRITE) throws(SysError) -> MappedMemory {
        try MappedMemory.map(length: Int(region.size), prot: prot, flags: MAP_SHARED, fd: fd.rawValue, offset: Int(region.offset))
    }

    public func pread(_ region: RegionInfo, offset: UInt64, count: Int) throws(SysError) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: count)
        let n = buf.withUnsafeMutableBytes { Glibc.pread(fd.rawValue, $0.baseAddress, count, off_t(region.offset + offset)) }
        if n != count { throw SysError("pread region \(region.index)", n < 0 ? Errno(rawValue: Glibc.errno) : .ioError) }
        return buf
    }

    public func pwrite(_ region: RegionInfo, offset: UInt64, bytes: [UInt8]) throws(SysError) {
        let n = bytes.withUnsafeBytes { Glibc.pwrite(fd.rawValue, $0.baseAddress, bytes.count, off_t(region.offset + offset)) }
        if n != bytes.count { throw SysError("pwrite region \(region.index)", n < 0 ? Errno(rawValue: Glibc.errno) : .ioError) }
    }

    /// Sets PCI_COMMAND memory space + bus master through the config region.
    public func enableBusMaster() throws(SysError) {
        let cfg = try regionInfo(UInt32(VFIO_PCI_CONFIG_REGION_INDEX))
        let cur = try pread(cfg, offset: 4, count: 2)
        var cmd = UInt16(cur[0]) | UInt16(cur[1]) << 8
        cmd |= 0x2 | 0x4  // PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
        try pwrite(cfg, offset: 4, bytes: [UInt8(cmd & 0xff), UInt8(cmd >> 8)])
    }

    public func reset() -> Result<Void, Errno> {
        Sys.ioctl(fd, CVFIO_DEVICE_RESET, value: 0).map { _ in () }
    }

    public func close() {
        if open { try? fd.close(); open = false }
    }

    deinit { close() }
}
