import CVFIO
import Foundation
import SystemPackage
import VFIO

struct BackendUnavailable: Error { var reason: String }

/// One way of giving a device a DMA space: a VFIO container (type1, type1v2, iommufd's compat
/// container), an iommufd IOAS with the device's cdev, or a container holding only an mdev.
/// `Session` asks its backend for the space and the devices and owns everything else; the
/// choice of backend happens once, in `Backends.open`.
protocol Backend: AnyObject {
    var kind: BackendKind { get }
    var space: DMASpace { get }
    /// The VFIO container, for what only VFIO has (VADDR updates, UNMAP_ALL, extensions).
    var vfioContainer: Container? { get }
    /// The IOMMU's page sizes and valid IOVA ranges as of now (they grow when a device attaches).
    var info: IOMMUInfo { get }
    /// Opens the device the cases run against (the PCI device, or the backend's own mdev).
    func openDevice(_ pci: PCIDevice) throws -> Device
    /// Opens another vfio-pci device into the same space; `opened` gets it as soon as it exists,
    /// so the caller closes it even when attaching fails.
    func openExtra(_ p: PCIDevice, role: String, opened: (Device) -> Void) throws
    /// IOMMU_IOAS_MAP_FILE, where the backend has it; nil: not this backend.
    func mapFile(fd: Int32, start: UInt64, length: UInt64, iova: UInt64, flags: DMAFlags) -> Result<Void, Errno>?
    /// Whether the space has an IOMMU domain (an mdev-only container pins nothing).
    var hasIOMMUDomain: Bool { get }
    /// Detaches `device` from the space before it is closed (iommufd); containers need nothing.
    func detach(_ device: Device)
    /// Closes the group(s), the container or the IOAS: after every device is closed.
    func close()
}

extension Backend {
    var hasIOMMUDomain: Bool { true }
    func mapFile(fd: Int32, start: UInt64, length: UInt64, iova: UInt64, flags: DMAFlags) -> Result<Void, Errno>? { nil }
    func detach(_ device: Device) {}
}

/// The one place a backend kind becomes a backend.
enum Backends {
    static func open(_ kind: BackendKind, pciGroup: Int, pci: PCIDevice) throws -> Backend {
        switch kind {
        case .type1, .type1v2, .iommufdCompatType1, .iommufdCompatType1v2:
            return try ContainerBackend(kind: kind, group: pciGroup)
        case .mdevMap, .mdevPin:
            return try MdevBackend(kind: kind)
        case .iommufd:
            return try IOMMUFDBackend(pci: pci)
        }
    }
}
