import CVFIO
import Foundation
import SystemPackage
import VFIO

/// A VFIO container — /dev/vfio/vfio (type1, type1v2) or /dev/iommu opened as one (iommufd's
/// compat) — holding the device's group, and the groups of extra devices.
final class ContainerBackend: Backend {
    let kind: BackendKind
    let container: Container
    let group: Group
    var extraGroups: [Group] = []
    private(set) var info: IOMMUInfo
    var space: DMASpace { container }
    var vfioContainer: Container? { container }

    init(kind: BackendKind, group number: Int) throws {
        self.kind = kind
        let path = kind.containerPath ?? "/dev/vfio/vfio"
        guard FileManager.default.fileExists(atPath: path) else {
            throw BackendUnavailable(reason: path == "/dev/iommu" ? "no /dev/iommu (kernel without CONFIG_IOMMUFD)"
                                                                  : "no \(path) (kernel without CONFIG_VFIO_CONTAINER, or vfio not loaded)")
        }
        let container: Container
        do { container = try Container(path: path) } catch {
            throw UsageError("\(error)")
        }
        guard case .success(let v) = container.apiVersion(), v == VFIO_API_VERSION else {
            container.close()
            throw UsageError("\(path): unexpected VFIO API version")
        }
        let type = kind.iommuType
        guard container.checkExtension(type.uapiValue) else {
            container.close()
            throw BackendUnavailable(reason: "\(path) does not offer \(type.rawValue) (VFIO_CHECK_EXTENSION)")
        }
        let group: Group
        do { group = try Group(number: number) } catch {
            container.close()
            throw UsageError("\(error)" + (error.errno == .permissionDenied ? " (run as root or chown /dev/vfio/\(number))" : ""))
        }
        do {
            let status = try group.status()
            guard status.viable else {
                let members = PCIDevice.groupMembers(number).joined(separator: " ")
                throw UsageError("IOMMU group \(number) is not viable: bind every device in it (\(members)) to vfio-pci")
            }
            try group.setContainer(container)
            try container.setIOMMU(type)
            switch container.info() {
            case .success(let i): info = i
            case .failure(let e): throw UsageError("VFIO_IOMMU_GET_INFO: \(e.symbol)")
            }
        } catch {
            group.close()
            container.close()
            throw error
        }
        self.container = container
        self.group = group
    }

    func openDevice(_ pci: PCIDevice) throws -> Device { try group.device(pci.address) }

    func openExtra(_ p: PCIDevice, role: String, opened: (Device) -> Void) throws {
        guard let n = p.iommuGroup else { throw RegionUnavailable("\(role) \(p.address) has no IOMMU group") }
        if n == group.number {
            opened(try group.device(p.address))
            return
        }
        let g = try Group(number: n)
        extraGroups.append(g)
        guard try g.status().viable else { throw RegionUnavailable("\(role) \(p.address): IOMMU group \(n) is not viable") }
        try g.setContainer(container)
        opened(try g.device(p.address))
    }

    func close() {
        for g in extraGroups { g.close() }
        extraGroups = []
        group.close()
        container.close()
    }
}
