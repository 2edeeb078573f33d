import CVFIO
import SystemPackage

/// /dev/vfio/N. Closing it detaches it from its container.
public final class Group {
    public let number: Int
    public let fd: FileDescriptor
    private var open = true
    private var attached = false

    public init(number: Int) throws(SysError) {
        self.number = number
        self.fd = try Sys.open("/dev/vfio/\(number)")
    }

    public struct Status: Sendable { public var viable: Bool; public var containerSet: Bool }

    public func status() throws(SysError) -> Status {
        var s = vfio_group_status()
        if case .failure(let e) = Sys.ioctl(fd, CVFIO_GROUP_GET_STATUS, &s, argsz: \.argsz) {
            throw SysError("VFIO_GROUP_GET_STATUS", e)
        }
        return Status(viable: s.flags & UInt32(VFIO_GROUP_FLAGS_VIABLE) != 0,
                      containerSet: s.flags & UInt32(VFIO_GROUP_FLAGS_CONTAINER_SET) != 0)
    }

    public func setContainer(_ container: Container) throws(SysError) {
        var cfd = container.fd.rawValue
        if case .failure(let e) = withUnsafeMutableBytes(of: &cfd, { Sys.ioctl(fd, CVFIO_GROUP_SET_CONTAINER, $0.baseAddress) }) {
            throw SysError("VFIO_GROUP_SET_CONTAINER", e)
        }
        attached = true
    }

    public func unsetContainer() {
        if attached {
            _ = Sys.ioctl(fd, CVFIO_GROUP_UNSET_CONTAINER, value: 0)
            attached = false
        }
    }

    public func device(_ name: String) throws(SysError) -> Device {
        let r = name.withCString { p in Sys.ioctl(fd, CVFIO_GROUP_GET_DEVICE_FD, UnsafeMutableRawPointer(mutating: p)) }
        switch r {
        case .success(let dfd): return Device(name: name, fd: FileDescriptor(rawValue: dfd))
        case .failure(let e): throw SysError("VFIO_GROUP_GET_DEVICE_FD(\(name))", e)
        }
    }

    public func close() {
        unsetContainer()
        if open { try? fd.close(); open = false }
    }

    deinit { close() }
}
