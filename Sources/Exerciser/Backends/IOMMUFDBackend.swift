import CVFIO
import Foundation
import SystemPackage
import VFIO

/// The native iommufd path: an IOAS, and each device's cdev (/dev/vfio/devices/vfioN) bound to
/// the iommufd and attached to it. Every `#if IOMMUFD_UAPI` of the backends lives here.
final class IOMMUFDBackend: Backend {
    let kind = BackendKind.iommufd
    #if IOMMUFD_UAPI
    let iommufd: IOMMUFD
    let ioas: IOAS
    var space: DMASpace { ioas }
    #else
    var space: DMASpace { fatalError("unreachable: init throws without iommufd") }
    #endif
    var vfioContainer: Container? { nil }
    private(set) var info: IOMMUInfo
    /// The iommufd device ids VFIO_DEVICE_BIND_IOMMUFD gave, by PCI address.
    private(set) var devIDs: [String: UInt32] = [:]

    /// /dev/vfio/devices/vfioN of a PCI device, from sysfs.
    static func cdev(_ address: String) -> String? {
        let dir = "\(PCIDevice.sysfs)/\(address)/vfio-dev"
        guard let name = (try? FileManager.default.contentsOfDirectory(atPath: dir))?.first(where: { $0.hasPrefix("vfio") }) else { return nil }
        return "/dev/vfio/devices/\(name)"
    }

    init(pci: PCIDevice) throws {
        #if IOMMUFD_UAPI
        guard FileManager.default.fileExists(atPath: "/dev/iommu") else {
            throw BackendUnavailable(reason: "no /dev/iommu (kernel without CONFIG_IOMMUFD)")
        }
        guard Self.cdev(pci.address) != nil else {
            throw BackendUnavailable(reason: "no VFIO device cdev for \(pci.address) (kernel without CONFIG_VFIO_DEVICE_CDEV)")
        }
        let fd = try IOMMUFD()
        let ioas: IOAS
        do { ioas = try fd.allocIOAS() } catch { fd.close(); throw error }
        guard case .success(let i) = ioas.info() else {
            ioas.destroy()
            fd.close()
            throw UsageError("IOMMU_IOAS_IOVA_RANGES failed")
        }
        iommufd = fd
        self.ioas = ioas
        info = i
        #else
        throw BackendUnavailable(reason: "built without iommufd UAPI headers (run scripts/fetch-uapi.sh, then rebuild)")
        #endif
    }

    /// The cdev bound to this iommufd and attached to the IOAS.
    func openCdev(_ address: String, opened: (Device) -> Void) throws -> Device {
        #if IOMMUFD_UAPI
        guard let path = Self.cdev(address) else { throw UsageError("\(address) has no VFIO cdev") }
        let dev = try Device.openCdev(path, name: address)
        opened(dev)
        devIDs[address] = try dev.bind(iommufd)
        try dev.attach(ioas)
        // Attaching adds the device's reserved regions (the MSI window) to the IOAS's ranges.
        if case .success(let i) = ioas.info(), !i.iovaRanges.isEmpty { info = i }
        return dev
        #else
        throw UsageError("built without iommufd")
        #endif
    }

    func openDevice(_ pci: PCIDevice) throws -> Device {
        var held: Device?
        do { return try openCdev(pci.address) { held = $0 } } catch {
            held?.close()
            throw error
        }
    }

    func openExtra(_ p: PCIDevice, role: String, opened: (Device) -> Void) throws {
        _ = try openCdev(p.address, opened: opened)
    }

    func mapFile(fd: Int32, start: UInt64, length: UInt64, iova: UInt64, flags: DMAFlags) -> Result<Void, Errno>? {
        #if IOMMUFD_UAPI
        return ioas.mapFile(fd: fd, start: start, length: length, iova: iova, flags: flags)
        #else
        return nil
        #endif
    }

    func detach(_ device: Device) {
        #if IOMMUFD_UAPI
        device.detach()
        #endif
    }

    func close() {
        #if IOMMUFD_UAPI
        ioas.destroy()
        iommufd.close()
        #endif
    }
}
