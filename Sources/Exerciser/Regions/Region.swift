import CVFIO
import Foundation
import SystemPackage
import VFIO

/// A region could not be built here (no hugepages reserved, no BAR, no filesystem):
/// the case becomes a SKIP carrying this reason.
public struct RegionUnavailable: Error, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// How the data check may use a region after a successful map.
public enum DataAccess: Sendable, Equatable {
    /// CPU can write a pattern and read back what the device wrote.
    case readWrite
    /// CPU can read only: the region was filled with `fill` before being made read-only.
    case readOnly
    /// Only the first `bytes` are ordinary memory (the rest is MMIO).
    case prefixOnly(UInt64)
    case none(String)

    public var isNone: Bool { if case .none = self { true } else { false } }

    /// The bytes of a `size`-byte region a data check can reach.
    public func checkable(of size: UInt64) -> UInt64 {
        switch self {
        case .readWrite, .readOnly: return size
        case .prefixOnly(let n): return min(n, size)
        case .none: return 0
        }
    }
}

/// Memory built for one case. Owners in `keep` release it (munmap, close) when dropped.
public final class Region {
    public let vaddr: UInt64
    public let size: UInt64
    public var properties: [String: String]
    public let access: DataAccess
    /// Byte pattern the region already holds (readOnly regions, zero pages), if known.
    public let initialFill: UInt8?
    /// Set for kinds the IOMMU maps by file (IOMMU_IOAS_MAP_FILE): the fd and its offset. The
    /// CPU still reaches the same pages through `vaddr`.
    public var file: (fd: Int32, offset: UInt64)?
    private var keep: [AnyObject]
    private let onRelease: (() -> Bool)?

    public init(vaddr: UInt64, size: UInt64, access: DataAccess, initialFill: UInt8? = nil,
                properties: [String: String] = [:], keep: [AnyObject] = [], onRelease: (() -> Bool)? = nil) {
        self.vaddr = vaddr
        self.size = size
        self.access = access
        self.initialFill = initialFill
        self.properties = properties
        self.keep = keep
        self.onRelease = onRelease
    }

    public var pointer: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: UInt(vaddr))! }

    /// Unmaps and closes everything; false when some clean-up step failed.
    public func release() -> Bool {
        let ok = onRelease?() ?? true
        for k in keep { (k as? MappedMemory)?.unmap() }
        keep.removeAll()
        return ok
    }
}

/// What a backing may need from the run: the device's BARs, directories on given filesystems.
public struct RegionContext {
    public var bars: [BARMapping]
    public var fsDir: String
    public var tmpfsDir: String
    /// A directory on a filesystem mounted with -o dax, for fsdax-file.
    public var fsdaxDir: String
    /// A device-dax node; nil: the first one on /sys/bus/dax.
    public var devdax: String?
    /// BAR0 of the peer device (--peer), opened in the same container; or why there is none.
    public var peer: Result<BARMapping, RegionUnavailable> = .failure(RegionUnavailable("no peer device (run --peer BDF)"))
    public init(bars: [BARMapping], fsDir: String, tmpfsDir: String, fsdaxDir: String = "/mnt/dax", devdax: String? = nil) {
        self.bars = bars
        self.fsDir = fsDir
        self.tmpfsDir = tmpfsDir
        self.fsdaxDir = fsdaxDir
        self.devdax = devdax
    }
}

/// A BAR of the device under test, mmapped once per session.
public struct BARMapping {
    public var name: String
    public var region: RegionInfo
    public var memory: MappedMemory?
    public var device: Device
}

/// One type per region kind; `instance` picks a BAR for kinds that expand per BAR.
public protocol RegionBacking {
    static var kind: CaseKind { get }
    init()
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region
}

enum Mem {
    static let rw = PROT_READ | PROT_WRITE
    static let anon = MAP_PRIVATE | MAP_ANONYMOUS

    static func anonymous(_ size: UInt64, flags: Int32 = anon, prot: Int32 = rw, alignment: Int = 0) throws -> MappedMemory {
        do { return try MappedMemory.map(length: Int(size), prot: prot, flags: flags, alignment: alignment) } catch {
            throw RegionUnavailable("mmap: \(error)")
        }
    }

    /// Faults every page in with one write each (`page`: the mapping's page size): a full memset
    /// of a 1 GiB page costs seconds under TCG and proves nothing more, and so do 262144 writes
    /// where one faults in the whole hugetlb page.
    static func touch(_ m: MappedMemory, _ fill: UInt8 = 0xA5, page: Int = PageSize.base) {
        for off in stride(from: 0, to: m.length, by: page) { m.base.storeBytes(of: fill, toByteOffset: off, as: UInt8.self) }
    }

    /// The smaps block for the vma containing `addr`.
    static func smaps(for addr: UInt64) -> [String: String] {
        guard let text = readProcFile("/proc/self/smaps") else { return [:] }
        var inside = false
        var out: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            if let dash = line.firstIndex(of: "-"), line.first?.isHexDigit == true,
               let sp = line.firstIndex(of: " "), dash < sp {
                if inside { break }
                let lo = UInt64(line[..<dash], radix: 16) ?? 0
                let hi = UInt64(line[line.index(after: dash)..<sp], radix: 16) ?? 0
                inside = addr >= lo && addr < hi
                continue
            }
            if inside, let colon = line.firstIndex(of: ":") {
                out[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return out
    }

    static func fsMagic(_ path: String) -> Int? {
        let m = cvfio_fs_magic(path)
        return m < 0 ? nil : Int(m)
    }

    static let tmpfsMagic = 0x01021994
    static let ext2to4Magic = 0xEF53

    /// The options of the mount holding `path` (longest mount point that prefixes it), from /proc/mounts.
    static func mountOptions(_ path: String) -> [String]? {
        guard let text = readProcFile("/proc/mounts") else { return nil }
        var best: (point: String, options: [String])?
        for line in text.split(whereSeparator: \.isNewline) {
            let f = line.split(separator: " ")
            guard f.count >= 4 else { continue }
            let point = String(f[1])
            let inside = path == point || path.hasPrefix(point == "/" ? "/" : point + "/")
            if inside && point.count >= (best?.point.count ?? -1) { best = (point, f[3].split(separator: ",").map(String.init)) }
        }
        return best?.options
    }

    /// A file of `size` bytes under `dir`, mmapped MAP_SHARED; the file is unlinked at once.
    static func sharedFile(dir: String, size: UInt64, name: String, alignment: Int = 0) throws -> (MappedMemory, FileDescriptor) {
        let path = "\(dir)/.vfio-exerciser-\(getpid())-\(name)"
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(path), .readWrite, options: [.create, .exclusiveCreate, .closeOnExec], permissions: [.ownerReadWrite])
        } catch {
            throw RegionUnavailable("cannot create \(path): \(error)")
        }
        unlink(path)
        guard ftruncate(fd.rawValue, off_t(size)) == 0 else {
            let e = Errno(rawValue: errno)
            try? fd.close()
            throw RegionUnavailable("ftruncate \(path): \(e.symbol)")
        }
        do {
            let m = try MappedMemory.map(length: Int(size), prot: rw, flags: MAP_SHARED, fd: fd.rawValue, alignment: alignment)
            return (m, fd)
        } catch {
            try? fd.close()
            throw RegionUnavailable("mmap \(path): \(error)")
        }
    }
}

/// /proc files report size 0: read them to EOF with read(2).
func readProcFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

/// Keeps a file descriptor open for the life of a region.
final class FDOwner {
    let fd: FileDescriptor
    var open = true
    init(_ fd: FileDescriptor) { self.fd = fd }
    func close() { if open { try? fd.close(); open = false } }
    deinit { close() }
}

/// The registry: kind → backing type. Kinds without a backing are edges (see Edges.swift).
public enum Backings {
    public static let all: [RegionBacking.Type] = [
        AnonPrivate.self, AnonUntouched.self, AnonShared.self, Memfd.self, MemfdHugetlb2M.self,
        Hugetlb2M.self, Hugetlb1G.self, THP.self, TmpfsFile.self, FSFile.self, ReadonlyWrite.self,
        ReadonlyRead.self, ProtNone.self, Hole.self, PartialHole.self, BAR.self, BARPlusAnon.self,
        PeerBAR.self, PeerBARDmabuf.self, Mlocked.self, MemfdSecret.self, MixedmapSpecial.self, MixedmapPage.self, FsdaxFile.self, Devdax.self,
        MemfdMapFile.self, MemfdHugetlbMapFile.self,
    ]

    public static func backing(for kind: CaseKind) -> RegionBacking? {
        all.first { $0.kind == kind }.map { $0.init() }
    }
}
