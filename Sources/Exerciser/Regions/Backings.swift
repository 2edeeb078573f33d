import CVFIO
import Foundation
import SystemPackage
import VFIO

struct AnonPrivate: RegionBacking {
    static let kind = CaseKind.anonPrivate
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let m = try Mem.anonymous(size)
        Mem.touch(m)
        return Region(vaddr: m.address, size: size, access: .readWrite, keep: [m])
    }
}

struct AnonUntouched: RegionBacking {
    static let kind = CaseKind.anonUntouched
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let m = try Mem.anonymous(size)
        // Read-faults map the shared zero page: what GUP must unshare (or not) for a pin.
        var sum: UInt8 = 0
        for off in stride(from: 0, to: Int(size), by: PageSize.base) { sum |= m.base.load(fromByteOffset: off, as: UInt8.self) }
        return Region(vaddr: m.address, size: size, access: .readWrite, initialFill: 0,
                      properties: ["zero_page_read": sum == 0 ? "yes" : "no"], keep: [m])
    }
}

struct AnonShared: RegionBacking {
    static let kind = CaseKind.anonShared
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let m = try Mem.anonymous(size, flags: MAP_SHARED | MAP_ANONYMOUS)
        Mem.touch(m)
        return Region(vaddr: m.address, size: size, access: .readWrite, keep: [m])
    }
}

/// memfd_create with optional hugetlb flags, mapped MAP_SHARED.
func memfdRegion(size: UInt64, flags: UInt32, what: String) throws -> Region {
    let fd = cvfio_memfd_create("vfio-exerciser", flags)
    guard fd >= 0 else { throw RegionUnavailable("memfd_create(\(what)): \(Errno(rawValue: errno).symbol)") }
    let owner = FDOwner(FileDescriptor(rawValue: fd))
    guard ftruncate(fd, off_t(size)) == 0 else {
        throw RegionUnavailable("ftruncate memfd(\(what)) to \(formatSize(size)): \(Errno(rawValue: errno).symbol)")
    }
    let m: MappedMemory
    do { m = try MappedMemory.map(length: Int(size), prot: Mem.rw, flags: MAP_SHARED, fd: fd) } catch {
        throw RegionUnavailable("mmap memfd(\(what)): \(error)")
    }
    // A hugetlb memfd with no free pages fails here with SIGBUS on touch; check the pool first.
    Mem.touch(m)
    let r = Region(vaddr: m.address, size: size, access: .readWrite, properties: Hugepages.pageSizeProperty(m.address), keep: [m, owner])
    r.file = (fd, 0)
    return r
}

struct Memfd: RegionBacking {
    static let kind = CaseKind.memfd
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        try memfdRegion(size: size, flags: 0, what: "shmem")
    }
}

struct MemfdHugetlb2M: RegionBacking {
    static let kind = CaseKind.memfdHugetlb2M
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        try Hugepages.requireFree(pageKB: 2048, bytes: size)
        return try memfdRegion(size: size, flags: CVFIO_MFD_HUGETLB | CVFIO_MFD_HUGE_2MB, what: "MFD_HUGETLB|MFD_HUGE_2MB")
    }
}

/// The same memfds, handed to the IOMMU as a file (IOMMU_IOAS_MAP_FILE, 6.13+): iommufd pins
/// the file's folios without walking a user VA.
struct MemfdMapFile: RegionBacking {
    static let kind = CaseKind.memfdMapFile
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        try Memfd().build(size: size, instance: instance, context: context)
    }
}

struct MemfdHugetlbMapFile: RegionBacking {
    static let kind = CaseKind.memfdHugetlbMapFile
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        try MemfdHugetlb2M().build(size: size, instance: instance, context: context)
    }
}

enum Hugepages {
    static func free(pageKB: Int) -> Int? {
        let path = "/sys/kernel/mm/hugepages/hugepages-\(pageKB)kB/free_hugepages"
        return (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    static func requireFree(pageKB: Int, bytes: UInt64) throws {
        let need = Int((bytes + UInt64(pageKB) * 1024 - 1) / (UInt64(pageKB) * 1024))
        guard let have = free(pageKB: pageKB) else {
            throw RegionUnavailable("no \(formatSize(UInt64(pageKB) << 10)) hugepage support (no /sys/kernel/mm/hugepages/hugepages-\(pageKB)kB)")
        }
        if have < need {
            throw RegionUnavailable("\(need) free \(formatSize(UInt64(pageKB) << 10)) hugepage(s) needed, \(have) free (reserve with hugepagesz=/hugepages= or nr_hugepages)")
        }
    }

    static func pageSizeProperty(_ addr: UInt64) -> [String: String] {
        Mem.smaps(for: addr)["KernelPageSize"].map { ["kernel_page_size": $0] } ?? [:]
    }

    static func anonymous(size: UInt64, pageKB: Int, hugeFlag: Int32) throws -> Region {
        try requireFree(pageKB: pageKB, bytes: size)
        let m: MappedMemory
        do {
            m = try MappedMemory.map(length: Int(size), prot: Mem.rw, flags: Mem.anon | CVFIO_MAP_HUGETLB | hugeFlag)
        } catch {
            throw RegionUnavailable("mmap MAP_HUGETLB \(formatSize(UInt64(pageKB) << 10)): \(error)")
        }
        Mem.touch(m, page: pageKB << 10)
        return Region(vaddr: m.address, size: size, access: .readWrite, properties: pageSizeProperty(m.address), keep: [m])
    }
}

struct Hugetlb2M: RegionBacking {
    static let kind = CaseKind.hugetlb2M
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        try Hugepages.anonymous(size: size, pageKB: 2048, hugeFlag: CVFIO_MAP_HUGE_2MB)
    }
}

struct Hugetlb1G: RegionBacking {
    static let kind = CaseKind.hugetlb1G
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        try Hugepages.anonymous(size: size, pageKB: 1 << 20, hugeFlag: CVFIO_MAP_HUGE_1GB)
    }
}

struct THP: RegionBacking {
    static let kind = CaseKind.thp
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let mode = (try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8)) ?? ""
        guard !mode.isEmpty else { throw RegionUnavailable("no transparent hugepage support in this kernel") }
        if mode.contains("[never]") { throw RegionUnavailable("transparent_hugepage/enabled is [never]") }
        let m = try Mem.anonymous(size, alignment: 2 << 20)
        _ = madvise(m.base, m.length, CVFIO_MADV_HUGEPAGE)
        Mem.touch(m)
        let huge = Mem.smaps(for: m.address)["AnonHugePages"] ?? "?"
        let got = huge.split(separator: " ").first.flatMap { Int($0) } ?? 0
        return Region(vaddr: m.address, size: size, access: .readWrite,
                      properties: ["huge_page": got > 0 ? "yes" : "no", "anon_huge_pages": huge], keep: [m])
    }
}

struct TmpfsFile: RegionBacking {
    static let kind = CaseKind.tmpfsFile
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        guard Mem.fsMagic(context.tmpfsDir) == Mem.tmpfsMagic else {
            throw RegionUnavailable("\(context.tmpfsDir) is not on tmpfs (set --tmpfs-dir)")
        }
        let (m, fd) = try Mem.sharedFile(dir: context.tmpfsDir, size: size, name: "tmpfs")
        Mem.touch(m)
        return Region(vaddr: m.address, size: size, access: .readWrite, keep: [m, FDOwner(fd)])
    }
}

struct FSFile: RegionBacking {
    static let kind = CaseKind.fsFile
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        guard Mem.fsMagic(context.fsDir) == Mem.ext2to4Magic else {
            throw RegionUnavailable("\(context.fsDir) is not an ext2/ext3/ext4 mount (set --fs-dir to a writeback filesystem)")
        }
        let (m, fd) = try Mem.sharedFile(dir: context.fsDir, size: size, name: "fs")
        Mem.touch(m)
        return Region(vaddr: m.address, size: size, access: .readWrite, properties: ["filesystem": "ext2/3/4"], keep: [m, FDOwner(fd)])
    }
}

/// Filled, then made read-only, so a READ DMA has known bytes to fetch.
func readOnlyRegion(size: UInt64) throws -> Region {
    let m = try Mem.anonymous(size)
    let fill: UInt8 = 0x3C
    memset(m.base, Int32(fill), m.length)  // every byte: the device must read back exactly this
    guard mprotect(m.base, m.length, PROT_READ) == 0 else { throw RegionUnavailable("mprotect PROT_READ: \(Errno(rawValue: errno).symbol)") }
    return Region(vaddr: m.address, size: size, access: .readOnly, initialFill: fill, keep: [m])
}

struct ReadonlyWrite: RegionBacking {
    static let kind = CaseKind.readonlyWrite
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region { try readOnlyRegion(size: size) }
}

struct ReadonlyRead: RegionBacking {
    static let kind = CaseKind.readonlyRead
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region { try readOnlyRegion(size: size) }
}

struct ProtNone: RegionBacking {
    static let kind = CaseKind.protNone
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let m = try Mem.anonymous(size, prot: PROT_NONE)
        return Region(vaddr: m.address, size: size, access: .none("PROT_NONE"), keep: [m])
    }
}

/// Reserves a range and unmaps it, so nothing else lands there while the case runs in this
/// single-threaded process.
struct Hole: RegionBacking {
    static let kind = CaseKind.hole
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let m = try Mem.anonymous(size)
        m.unmap()
        let present = !Mem.smaps(for: m.address).isEmpty
        return Region(vaddr: m.address, size: size, access: .none("no vma"), properties: ["vma_present": present ? "yes" : "no"])
    }
}

struct PartialHole: RegionBacking {
    static let kind = CaseKind.partialHole
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let m = try Mem.anonymous(size)
        Mem.touch(m)
        let half = Int(size / 2)
        munmap(m.base + half, Int(size) - half)
        let firstHalf = MappedMemory(base: m.base, length: half)
        m.forget()
        let holePresent = !Mem.smaps(for: m.address + UInt64(half)).isEmpty
        return Region(vaddr: firstHalf.address, size: size, access: .none("second half is a hole"),
                      properties: ["second_half_vma": holePresent ? "yes" : "no"], keep: [firstHalf])
    }
}

func pickBAR(_ instance: String?, _ context: RegionContext) throws -> BARMapping {
    guard let bar = context.bars.first(where: { $0.name == instance }) else {
        throw RegionUnavailable("device has no \(instance ?? "BAR")")
    }
    guard bar.memory != nil else { throw RegionUnavailable("\(bar.name) is not mmappable (no VFIO_REGION_INFO_FLAG_MMAP)") }
    return bar
}

struct BAR: RegionBacking {
    static let kind = CaseKind.bar
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let bar = try pickBAR(instance, context)
        let mem = bar.memory!
        return Region(vaddr: mem.address, size: UInt64(mem.length), access: .none("device MMIO"),
                      properties: ["bar": bar.name, "bar_size": formatSize(bar.region.size)])
    }
}

/// The peer's BAR0 (VM_PFNMAP like `bar`, but another device's): what peer-to-peer DMA targets.
struct PeerBAR: RegionBacking {
    static let kind = CaseKind.peerBar
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let bar = try context.peer.get()
        guard let mem = bar.memory else { throw RegionUnavailable("the peer's \(bar.name) is not mmappable") }
        return Region(vaddr: mem.address, size: UInt64(mem.length), access: .none("peer MMIO: checked peer-to-peer"),
                      properties: ["peer_bar": bar.name, "bar_size": formatSize(bar.region.size)])
    }
}

/// The peer's BAR0 as a dma-buf: the IOMMU gets the dma-buf fd (IOMMU_IOAS_MAP_FILE), the CPU
/// checks through the BAR's mmap.
struct PeerBARDmabuf: RegionBacking {
    static let kind = CaseKind.peerBarDmabuf
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let bar = try context.peer.get()
        guard let mem = bar.memory else { throw RegionUnavailable("the peer's \(bar.name) is not mmappable") }
        #if IOMMUFD_UAPI
        let fd: Int32
        switch bar.device.exportDMABuf(region: bar.region.index, length: bar.region.size) {
        case .success(let f): fd = f
        case .failure(let e):
            throw RegionUnavailable("VFIO_DEVICE_FEATURE_DMA_BUF on the peer's \(bar.name): \(e.symbol)"
                                    + (e == .inappropriateIOCTLForDevice || e == .notSupported || e == .invalidArgument ? " (kernel without CONFIG_VFIO_PCI_DMABUF)" : ""))
        }
        let r = Region(vaddr: mem.address, size: UInt64(mem.length), access: .none("peer MMIO: checked peer-to-peer"),
                       properties: ["peer_bar": bar.name, "dma_buf": "fd"], keep: [FDOwner(FileDescriptor(rawValue: fd))])
        r.file = (fd, 0)
        return r
        #else
        throw RegionUnavailable("built without iommufd.h: no VFIO_DEVICE_FEATURE_DMA_BUF")
        #endif
    }
}

/// An anonymous vma immediately followed by a BAR vma, mapped as one range.
struct BARPlusAnon: RegionBacking {
    static let kind = CaseKind.barPlusAnon
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        guard let bar = context.bars.first(where: { $0.memory != nil }) else {
            throw RegionUnavailable("device has no mmappable BAR")
        }
        let anonSize = UInt64(64 << 10)
        let total = anonSize + bar.region.size
        let reserve = try Mem.anonymous(total, prot: PROT_NONE)
        reserve.forget()  // re-owned below as two mappings
        let anon: MappedMemory
        let barMem: MappedMemory
        do {
            anon = try MappedMemory.map(length: Int(anonSize), prot: Mem.rw, flags: Mem.anon, at: reserve.base)
            barMem = try MappedMemory.map(length: Int(bar.region.size), prot: Mem.rw, flags: MAP_SHARED,
                                          fd: bar.device.fd.rawValue, offset: Int(bar.region.offset), at: reserve.base + Int(anonSize))
        } catch {
            munmap(reserve.base, Int(total))
            throw RegionUnavailable("building anon+\(bar.name) range: \(error)")
        }
        Mem.touch(anon)
        return Region(vaddr: anon.address, size: total, access: .prefixOnly(anonSize),
                      properties: ["bar": bar.name, "anon_bytes": formatSize(anonSize)], keep: [anon, barMem])
    }
}

struct Mlocked: RegionBacking {
    static let kind = CaseKind.mlocked
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let m = try Mem.anonymous(size)
        Mem.touch(m)
        guard mlock(m.base, m.length) == 0 else { throw RegionUnavailable("mlock: \(Errno(rawValue: errno).symbol)") }
        return Region(vaddr: m.address, size: size, access: .readWrite, keep: [m]) {
            munlock(m.base, m.length) == 0
        }
    }
}

struct MemfdSecret: RegionBacking {
    static let kind = CaseKind.memfdSecret
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let fd = cvfio_memfd_secret(0)
        guard fd >= 0 else {
            let e = Errno(rawValue: errno)
            throw RegionUnavailable("memfd_secret: \(e.symbol)" + (e == .noFunction ? " (kernel without it, or secretmem.enable=0)" : ""))
        }
        let owner = FDOwner(FileDescriptor(rawValue: fd))
        guard ftruncate(fd, off_t(size)) == 0 else { throw RegionUnavailable("ftruncate memfd_secret: \(Errno(rawValue: errno).symbol)") }
        let m: MappedMemory
        do { m = try MappedMemory.map(length: Int(size), prot: Mem.rw, flags: MAP_SHARED, fd: fd) } catch {
            throw RegionUnavailable("mmap memfd_secret: \(error) (secretmem needs RLIMIT_MEMLOCK room)")
        }
        Mem.touch(m)
        return Region(vaddr: m.address, size: size, access: .readWrite, keep: [m, owner])
    }
}

/// An mmap of the test module's device (kmod/): VM_MIXEDMAP, MAP_SHARED.
func testModuleRegion(size: UInt64, pgoff: Int, access: DataAccess, what: String) throws -> Region {
    let path = VFIO_EXERCISER_TEST_DEV
    let fd = open(path, O_RDWR | O_CLOEXEC)
    guard fd >= 0 else {
        throw RegionUnavailable("\(path): \(Errno(rawValue: errno).symbol) (the test module vfio_exerciser_test is not loaded)")
    }
    let owner = FDOwner(FileDescriptor(rawValue: fd))
    let m: MappedMemory
    do { m = try MappedMemory.map(length: Int(size), prot: Mem.rw, flags: MAP_SHARED, fd: fd, offset: pgoff * PageSize.base) } catch {
        throw RegionUnavailable("mmap \(path) (\(what)): \(error)")
    }
    return Region(vaddr: m.address, size: size, access: access, properties: ["vma": "VM_MIXEDMAP \(what)"], keep: [m, owner])
}

struct MixedmapSpecial: RegionBacking {
    static let kind = CaseKind.mixedmapSpecial
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        // Not touched: the PTEs appear when GUP faults them in (the path under test).
        try testModuleRegion(size: size, pgoff: Int(VFIO_EXERCISER_TEST_PGOFF_SPECIAL), access: .none("MMIO of the second edu device"),
                             what: "special PTEs")
    }
}

struct MixedmapPage: RegionBacking {
    static let kind = CaseKind.mixedmapPage
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let r = try testModuleRegion(size: size, pgoff: Int(VFIO_EXERCISER_TEST_PGOFF_PAGE), access: .readWrite, what: "struct-page pages")
        for off in stride(from: 0, to: Int(size), by: PageSize.base) { r.pointer.storeBytes(of: 0xA5, toByteOffset: off, as: UInt8.self) }
        return r
    }
}

/// A file on a filesystem mounted -o dax on pmem: the mapping has no page cache, GUP sees
/// ZONE_DEVICE pages of an fsdax vma, which a long-term pin must not take (truncate would wait
/// for the pin forever).
struct FsdaxFile: RegionBacking {
    static let kind = CaseKind.fsdaxFile
    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        let dir = context.fsdaxDir
        guard let opts = Mem.mountOptions(dir), Mem.fsMagic(dir) != nil else { throw RegionUnavailable("\(dir) does not exist (set --fsdax-dir)") }
        guard opts.contains(where: { $0 == "dax" || $0 == "dax=always" }) else {
            throw RegionUnavailable("\(dir) is not mounted with -o dax (the test VM puts ext4 -o dax on pmem there; set --fsdax-dir)")
        }
        let (m, fd) = try Mem.sharedFile(dir: dir, size: size, name: "fsdax", alignment: 2 << 20)
        Mem.touch(m)
        return Region(vaddr: m.address, size: size, access: .readWrite, properties: ["mount": "dax"], keep: [m, FDOwner(fd)])
    }
}

/// A device-dax node (/dev/daxX.Y): ZONE_DEVICE pages mapped MAP_SHARED at the device's
/// alignment (the driver refuses a vma not aligned to it).
struct Devdax: RegionBacking {
    static let kind = CaseKind.devdax
    static let sysfs = "/sys/bus/dax/devices"

    static func first() -> String? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: sysfs))?.sorted() ?? []
        return names.first { FileManager.default.fileExists(atPath: "/dev/" + $0) }.map { "/dev/" + $0 }
    }

    func build(size: UInt64, instance: String?, context: RegionContext) throws -> Region {
        guard let path = context.devdax ?? Self.first() else {
            throw RegionUnavailable("no device-dax device (\(Self.sysfs) lists none with a /dev node; the test VM makes one on pmem)")
        }
        let name = (path as NSString).lastPathComponent
        let align = (readProcFile("\(Self.sysfs)/\(name)/align")?.trimmingCharacters(in: .whitespacesAndNewlines)).flatMap { Int($0) } ?? (2 << 20)
        guard align > 0, size % UInt64(align) == 0 else { throw RegionUnavailable("\(path): size \(formatSize(size)) is not a multiple of its alignment \(formatSize(UInt64(align)))") }
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw RegionUnavailable("\(path): \(Errno(rawValue: errno).symbol)") }
        let owner = FDOwner(FileDescriptor(rawValue: fd))
        let m: MappedMemory
        do { m = try MappedMemory.map(length: Int(size), prot: Mem.rw, flags: MAP_SHARED, fd: fd, alignment: align) } catch {
            throw RegionUnavailable("mmap \(path): \(error)")
        }
        Mem.touch(m)
        return Region(vaddr: m.address, size: size, access: .readWrite, properties: ["device": path, "align": formatSize(UInt64(align))], keep: [m, owner])
    }
}
