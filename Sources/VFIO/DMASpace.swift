import SystemPackage

/// Where DMA mappings live: a VFIO container (type1, or /dev/iommu in compat mode) or an
/// iommufd IOAS. Raw tier: every call returns the kernel's errno untouched.
public protocol DMASpace: AnyObject {
    func map(vaddr: UInt64, iova: UInt64, size: UInt64, flags: DMAFlags) -> Result<Void, Errno>
    /// VFIO flag bits as given, undefined ones included (the unknown-flag case).
    func map(vaddr: UInt64, iova: UInt64, size: UInt64, rawFlags: UInt32) -> Result<Void, Errno>
    /// Returns the byte count the kernel says it unmapped.
    func unmap(iova: UInt64, size: UInt64) -> Result<UInt64, Errno>
    func unmapAll() -> Result<UInt64, Errno>
    func info() -> Result<IOMMUInfo, Errno>
    /// Maps `size` bytes in a child with RLIMIT_MEMLOCK = `limit` and no CAP_IPC_LOCK.
    func mapInLimitedChild(iova: UInt64, size: UInt64, limit: UInt64) -> Result<UInt64, MemlockProbeError>
}

extension Container: DMASpace {
    public func unmap(iova: UInt64, size: UInt64) -> Result<UInt64, Errno> {
        unmap(iova: iova, size: size, flags: [])
    }

    public func unmapAll() -> Result<UInt64, Errno> {
        unmap(iova: 0, size: 0, flags: .all)
    }
}
