import VFIO

/// Every case kind a user can name. Region kinds build memory and map it; edge kinds probe
/// argument checking. The backing for each region kind is one type in Regions/.
public enum CaseKind: String, CaseIterable, Sendable, Codable {
    case anonPrivate = "anon-private"
    case anonUntouched = "anon-untouched"
    case anonShared = "anon-shared"
    case memfd
    case memfdHugetlb2M = "memfd-hugetlb-2M"
    case hugetlb2M = "hugetlb-2M"
    case hugetlb1G = "hugetlb-1G"
    case thp
    case tmpfsFile = "tmpfs-file"
    case fsFile = "fs-file"
    case readonlyWrite = "readonly-write"
    case readonlyRead = "readonly-read"
    case protNone = "prot-none"
    case hole
    case partialHole = "partial-hole"
    case bar
    case barPlusAnon = "bar-plus-anon"
    /// BAR0 of a second device (--peer) in the same container: the device under test DMAs
    /// into it and out of it (peer-to-peer through the IOMMU).
    case peerBar = "peer-bar"
    /// The same BAR exported as a dma-buf and mapped with IOMMU_IOAS_MAP_FILE: iommufd's
    /// supported peer-to-peer route (iommufd only).
    case peerBarDmabuf = "peer-bar-dmabuf"
    case mlocked
    case memfdSecret = "memfd-secret"
    /// VM_MIXEDMAP vmas from the test module (kmod/): pfns without struct page (special PTEs,
    /// the 2022 follow_pfn_pte bug's path) and ordinary pages.
    case mixedmapSpecial = "mixedmap-special"
    case mixedmapPage = "mixedmap-page"
    /// Persistent memory (the VM's memmap=nn!ss pmem): a file on ext4 -o dax, and device-dax.
    case fsdaxFile = "fsdax-file"
    case devdax
    /// memfds mapped with IOMMU_IOAS_MAP_FILE (iommufd only).
    case memfdMapFile = "memfd-map-file"
    case memfdHugetlbMapFile = "memfd-hugetlb-2M-map-file"
    // Argument edges.
    case unalignedVaddr = "unaligned-vaddr"
    case sizeZero = "size-zero"
    case flagsNone = "flags-none"
    case flagsUnknown = "flags-unknown"
    case iovaOverlap = "iova-overlap"
    case memlockLimit = "memlock-limit"
    case iovaOutOfRange = "iova-out-of-range"
    case vaddrUpdate = "vaddr-update"
    case unmapSubrange = "unmap-subrange"
    case unmapAll = "unmap-all"
    /// type1's dma_entry_limit module parameter: one mapping past it must fail (events, issue 13).
    case dmaEntryLimit = "dma-entry-limit"

    /// Kinds mapped by file rather than by user VA: an IOAS call, so the iommufd backend only.
    public var mapsByFile: Bool { self == .memfdMapFile || self == .memfdHugetlbMapFile || self == .peerBarDmabuf }

    /// Kinds whose data check is the peer-to-peer one.
    public var targetsPeer: Bool { self == .peerBar || self == .peerBarDmabuf }

    /// mdev backends exercise the pin path of memory: no argument edges (they need an IOMMU
    /// domain to mean much) and no BARs (an mdev has none of the PCI device's).
    public func runs(on b: BackendKind) -> Bool {
        if mapsByFile { return b == .iommufd }
        if self == .dmaEntryLimit { return b == .type1 || b == .type1v2 }
        if b.isMdev { return !isEdge && self != .bar && self != .barPlusAnon && !targetsPeer }
        return true
    }

    public var isEdge: Bool {
        switch self {
        case .unalignedVaddr, .sizeZero, .flagsNone, .flagsUnknown, .iovaOverlap, .memlockLimit,
             .iovaOutOfRange, .vaddrUpdate, .unmapSubrange, .unmapAll, .dmaEntryLimit:
            return true
        default:
            return false
        }
    }

    /// Kinds that need the device open (its BARs).
    public var needsDevice: Bool { self == .bar || self == .barPlusAnon }

    /// Phases a kind runs in by default: edges before and after the device is opened.
    public var phases: [Phase] {
        if self == .dmaEntryLimit { return [.preDevice] }  // opens a container of its own
        return isEdge ? [.preDevice, .device] : [.device]
    }

    public var defaultSize: UInt64 {
        switch self {
        case .hugetlb1G: return 1 << 30
        case .memfdHugetlb2M, .hugetlb2M, .thp, .fsdaxFile, .devdax, .memfdHugetlbMapFile: return 2 << 20
        case .memlockLimit: return 8 << 20
        case .bar, .barPlusAnon, .peerBar, .peerBarDmabuf: return 0  // from the BAR
        default: return 64 << 10
        }
    }

    public var defaultFlags: [String] {
        switch self {
        case .readonlyRead: return ["read"]
        default: return ["read", "write"]
        }
    }

    public var summary: String {
        switch self {
        case .anonPrivate: return "private anonymous memory, touched (ordinary GUP pin)"
        case .anonUntouched: return "private anonymous memory never touched (shared zero page / unshare)"
        case .anonShared: return "MAP_SHARED|MAP_ANONYMOUS (shmem)"
        case .memfd: return "memfd_create, MAP_SHARED (shmem)"
        case .memfdHugetlb2M: return "memfd_create(MFD_HUGETLB|MFD_HUGE_2MB), MAP_SHARED"
        case .hugetlb2M: return "MAP_HUGETLB|MAP_HUGE_2MB anonymous"
        case .hugetlb1G: return "MAP_HUGETLB|MAP_HUGE_1GB anonymous"
        case .thp: return "2M-aligned anonymous + MADV_HUGEPAGE; reports whether a huge page was obtained"
        case .tmpfsFile: return "file on tmpfs, MAP_SHARED"
        case .fsFile: return "writable MAP_SHARED file on a writeback filesystem (ext2/ext4)"
        case .readonlyWrite: return "PROT_READ vma mapped READ|WRITE for DMA"
        case .readonlyRead: return "PROT_READ vma mapped READ-only for DMA"
        case .protNone: return "PROT_NONE vma"
        case .hole: return "address range with no vma"
        case .partialHole: return "first half mapped, second half a hole"
        case .bar: return "each mmappable BAR of the device (VM_IO|VM_PFNMAP), one case each"
        case .barPlusAnon: return "one range spanning an anonymous vma and a BAR vma"
        case .peerBar: return "BAR0 of a second device (--peer) in the same container, DMAed into by the first (peer-to-peer)"
        case .peerBarDmabuf: return "the peer's BAR0 as a dma-buf (VFIO_DEVICE_FEATURE_DMA_BUF) mapped by IOMMU_IOAS_MAP_FILE (iommufd only)"
        case .mlocked: return "mlock()ed private anonymous memory"
        case .memfdSecret: return "memfd_secret() memory (removed from the direct map)"
        case .mixedmapSpecial: return "VM_MIXEDMAP vma of special PTEs (MMIO pfns, no struct page) from the test module"
        case .mixedmapPage: return "VM_MIXEDMAP vma of ordinary struct-page pages from the test module"
        case .fsdaxFile: return "MAP_SHARED file on a filesystem mounted -o dax on pmem (fsdax)"
        case .devdax: return "device-dax character device (/dev/daxX.Y) on pmem, mapped at its alignment"
        case .memfdMapFile: return "memfd mapped by IOMMU_IOAS_MAP_FILE (fd + offset, no user VA; iommufd only)"
        case .memfdHugetlbMapFile: return "MFD_HUGETLB|MFD_HUGE_2MB memfd mapped by IOMMU_IOAS_MAP_FILE (iommufd only)"
        case .unalignedVaddr: return "vaddr not aligned to the IOMMU page size"
        case .sizeZero: return "size 0"
        case .flagsNone: return "neither READ nor WRITE"
        case .flagsUnknown: return "an undefined flag bit"
        case .iovaOverlap: return "a second map overlapping a mapped IOVA range"
        case .memlockLimit: return "8 MiB past a 1 MiB RLIMIT_MEMLOCK, without CAP_IPC_LOCK"
        case .iovaOutOfRange: return "IOVA outside the valid ranges from VFIO_IOMMU_GET_INFO"
        case .vaddrUpdate: return "VFIO_DMA_UNMAP_FLAG_VADDR invalidate, then MAP_FLAG_VADDR update"
        case .unmapSubrange: return "unmap the second half of a mapping (bytes reported unmapped)"
        case .unmapAll: return "VFIO_DMA_UNMAP_FLAG_ALL over two mappings"
        case .dmaEntryLimit: return "vfio_iommu_type1 dma_entry_limit lowered for a fresh container: one mapping past it (parameter restored)"
        }
    }
}

/// The backends a case can run on: one row each, everything else derives from it.
public enum BackendKind: String, CaseIterable, Sendable, Codable {
    case type1
    case type1v2
    /// /dev/iommu opened as the VFIO container (iommufd's type1 emulation).
    case iommufdCompatType1 = "iommufd-compat-type1"
    case iommufdCompatType1v2 = "iommufd-compat-type1v2"
    /// The VFIO device cdev bound to an iommufd IOAS.
    case iommufd
    /// A type1v2 container holding only an mdev group: MAP_DMA pins nothing (the mtty sample's
    /// mdev where the kernel has it, else the test module's).
    case mdevMap = "mdev-map"
    /// The same, then the test module's mdev pins the IOVA with vfio_pin_pages() and reads and
    /// writes it with vfio_dma_rw(): the external path vendor mdev drivers use.
    case mdevPin = "mdev-pin"

    public var isMdev: Bool { self == .mdevMap || self == .mdevPin }

    /// The file opened as a VFIO container; nil for the native cdev path.
    public var containerPath: String? {
        switch self {
        case .type1, .type1v2, .mdevMap, .mdevPin: return "/dev/vfio/vfio"
        case .iommufdCompatType1, .iommufdCompatType1v2: return "/dev/iommu"
        case .iommufd: return nil
        }
    }

    public var iommuType: IOMMUType {
        switch self {
        case .type1, .iommufdCompatType1: return .type1
        case .type1v2, .iommufdCompatType1v2, .iommufd, .mdevMap, .mdevPin: return .type1v2
        }
    }
}
