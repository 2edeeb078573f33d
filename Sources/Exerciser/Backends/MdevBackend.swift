import CVFIO
import Foundation
import SystemPackage
import VFIO

/// A type1v2 container holding only an mdev's group. mdev-map: MAP_DMA pins nothing (the mtty
/// sample's mdev where the kernel has it, else the test module's). mdev-pin: the test module's
/// mdev, which pins the IOVA on request (`pins`).
final class MdevBackend: Backend {
    let kind: BackendKind
    let mdev: MdevDevice
    let inner: ContainerBackend
    var space: DMASpace { inner.space }
    var vfioContainer: Container? { inner.container }
    var info: IOMMUInfo { inner.info }
    var hasIOMMUDomain: Bool { false }

    init(kind: BackendKind) throws {
        self.kind = kind
        let all = MdevDevice.all()
        let test = all.first { $0.type.hasPrefix("vfio_exerciser_test") }
        let pick = kind == .mdevPin ? test : (all.first { $0.type.hasPrefix("mtty") } ?? test)
        guard let m = pick else {
            throw BackendUnavailable(reason: kind == .mdevPin
                ? "no mdev of the test module (kmod/ vfio_exerciser_test not loaded)"
                : "no mdev (neither the mtty sample nor the test module)")
        }
        mdev = m
        inner = try ContainerBackend(kind: kind, group: m.group)
    }

    func openDevice(_ pci: PCIDevice) throws -> Device { try inner.group.device(mdev.uuid) }

    func openExtra(_ p: PCIDevice, role: String, opened: (Device) -> Void) throws {
        throw RegionUnavailable("\(role) \(p.address): an mdev-only container takes no PCI device")
    }

    func close() { inner.close() }
}
