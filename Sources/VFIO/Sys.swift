import CVFIO
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// An errno with the operation that produced it. Every kernel-facing call throws this.
public struct SysError: Error, CustomStringConvertible, Equatable {
    public let operation: String
    public let errno: Errno
    public init(_ operation: String, _ errno: Errno) {
        self.operation = operation
        self.errno = errno
    }
    public var description: String { "\(operation): \(errno.symbol) (\(errno))" }
}

extension Errno {
    /// Symbolic name as in the kernel sources ("EFAULT"); "E<n>" when glibc has none.
    public var symbol: String {
        if let p = cvfio_errno_name(rawValue) { return String(cString: p) }
        return "E\(rawValue)"
    }

    /// Inverse of `symbol` for the errnos Linux defines.
    public init?(symbol: String) {
        for code in 1..<256 {
            if let p = cvfio_errno_name(Int32(code)), String(cString: p) == symbol {
                self.init(rawValue: Int32(code))
                return
            }
        }
        return nil
    }

    static var current: Errno { Errno(rawValue: Glibc.errno) }
}

/// The one path through which every ioctl goes: a raw tier returning the errno.
public enum Sys {
    public static func ioctl(_ fd: FileDescriptor, _ request: UInt, _ arg: UnsafeMutableRawPointer?) -> Result<Int32, Errno> {
        while true {
            let r = cvfio_ioctl(fd.rawValue, request, arg)
            if r >= 0 { return .success(r) }
            let e = Errno.current
            if e != .interrupted { return .failure(e) }
        }
    }

    public static func ioctl(_ fd: FileDescriptor, _ request: UInt, value: UInt) -> Result<Int32, Errno> {
        while true {
            let r = cvfio_ioctl_int(fd.rawValue, request, value)
            if r >= 0 { return .success(r) }
            let e = Errno.current
            if e != .interrupted { return .failure(e) }
        }
    }

    /// ioctl on a UAPI struct whose first field is `argsz`, filled from its size.
    public static func ioctl<T>(_ fd: FileDescriptor, _ request: UInt, _ value: inout T, argsz: WritableKeyPath<T, UInt32>) -> Result<Int32, Errno> {
        value[keyPath: argsz] = UInt32(MemoryLayout<T>.size)
        return withUnsafeMutableBytes(of: &value) { ioctl(fd, request, $0.baseAddress) }
    }

    public static func open(_ path: String, _ mode: FileDescriptor.AccessMode = .readWrite) throws(SysError) -> FileDescriptor {
        do {
            return try FileDescriptor.open(FilePath(path), mode, options: [.closeOnExec])
        } catch {
            throw SysError("open \(path)", (error as? Errno) ?? .ioError)
        }
    }
}
