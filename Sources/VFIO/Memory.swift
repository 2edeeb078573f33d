import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// An owned mmap: unmapped on deinit. `length` is what was mapped, which may exceed what a
/// case exposes (alignment slack is trimmed at creation).
public final class MappedMemory {
    public let base: UnsafeMutableRawPointer
    public let length: Int
    private var live = true

    public init(base: UnsafeMutableRawPointer, length: Int) {
        self.base = base
        self.length = length
    }

    /// mmap wrapper; `alignment` > page size over-allocates and trims so `base` is aligned.
    public static func map(length: Int, prot: Int32, flags: Int32, fd: Int32 = -1, offset: Int = 0,
                           alignment: Int = 0, at hint: UnsafeMutableRawPointer? = nil) throws(SysError) -> MappedMemory {
        if alignment > Int(sysconf(Int32(_SC_PAGESIZE))) && hint == nil {
            // Reserve length + alignment, then trim both ends.
            let total = length + alignment
            guard let raw = mmap(nil, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
                  raw != MAP_FAILED else { throw SysError("mmap reserve", .current) }
            let start = (UInt(bitPattern: raw) + UInt(alignment - 1)) & ~UInt(alignment - 1)
            let head = Int(start - UInt(bitPattern: raw))
            if head > 0 { munmap(raw, head) }
            let tail = total - head - length
            if tail > 0 { munmap(raw + head + length, tail) }
            let aligned = UnsafeMutableRawPointer(bitPattern: start)!
            guard let p = mmap(aligned, length, prot, flags | MAP_FIXED, fd, off_t(offset)), p != MAP_FAILED else {
                let e = Errno.current
                munmap(aligned, length)
                throw SysError("mmap", e)
            }
            return MappedMemory(base: p, length: length)
        }
        let f = hint == nil ? flags : flags | MAP_FIXED
        guard let p = mmap(hint, length, prot, f, fd, off_t(offset)), p != MAP_FAILED else {
            throw SysError("mmap", .current)
        }
        return MappedMemory(base: p, length: length)
    }

    public var address: UInt64 { UInt64(UInt(bitPattern: base)) }

    public func unmap() {
        if live { munmap(base, length); live = false }
    }

    /// Hands ownership of the range to someone else (e.g. after a partial munmap).
    public func forget() { live = false }

    deinit { unmap() }
}

public enum PageSize {
    public static let base = Int(sysconf(Int32(_SC_PAGESIZE)))
}
