import CVFIO
import Foundation
import SystemPackage
import VFIO

struct BackendUnavailable: Error { var reason: String }

/// The DMA space (a container, or an IOAS), the group or cdev, and the device once opened,
/// for one backend; torn down in order: unmap → detach → device → group → container.
final class Session {
    let backend: BackendKind
    let space: DMASpace
    /// The VFIO container, when the backend has one (for VADDR and extensions).
    let container: Container?
    let group: Group?
    #if IOMMUFD_UAPI
    var iommufd: IOMMUFD?
    var ioas: IOAS?
    #endif
    let options: RunOptions
    let pci: PCIDevice
    var info: IOMMUInfo
    var iova: IOVAAllocator
    var device: Device?
    var bars: [BARMapping] = []
    /// The device's DMA engine first, then the peer's and the helpers' (edu only).
    var engines: [DMADriver] = []
    var dma: DMADriver? { engines.first }
    var dmaUnavailable = "no DMA-capable driver for this device"
    var scratch: MappedMemory?
    var scratchIOVA: UInt64 = 0
    /// The NVMe engine (the device under test or a --dma-helper of class 01:08:02) and its memory.
    var nvme: NVMeEngine?
    var nvmeMemory: SessionDMAMemory?
    var nvmeAddress: String?
    var deviceOpen: Bool { device != nil }
    var teardownProblems: [String] = []
    let kmsg = KernelLog()

    /// The peer device (--peer), opened into the same container or IOAS, for peer-bar.
    var peer: Result<BARMapping, RegionUnavailable> = .failure(RegionUnavailable("no peer device (run --peer BDF)"))
    /// The peer's and the helpers' groups (when not the device's own), devices and BAR0 mappings.
    var extraGroups: [Group] = []
    var extraDevices: [Device] = []
    var helperBARs: [BARMapping] = []

    /// The mdev the mdev backends use in place of the PCI device.
    var mdev: MdevDevice?
    var pins: ExternalPins?

    init(backend: BackendKind, group pciGroup: Int, options: RunOptions, pci: PCIDevice) throws {
        self.backend = backend
        self.options = options
        self.pci = pci
        var number = pciGroup
        if backend.isMdev {
            let all = MdevDevice.all()
            let test = all.first { $0.type.hasPrefix("vfio_exerciser_test") }
            let pick = backend == .mdevPin ? test : (all.first { $0.type.hasPrefix("mtty") } ?? test)
            guard let m = pick else {
                throw BackendUnavailable(reason: backend == .mdevPin
                    ? "no mdev of the test module (kmod/ vfio_exerciser_test not loaded)"
                    : "no mdev (neither the mtty sample nor the test module)")
            }
            mdev = m
            number = m.group
        }
        guard let path = backend.containerPath else {
            #if IOMMUFD_UAPI
            guard FileManager.default.fileExists(atPath: "/dev/iommu") else {
                throw BackendUnavailable(reason: "no /dev/iommu (kernel without CONFIG_IOMMUFD)")
            }
            guard Session.cdev(pci.address) != nil else {
                throw BackendUnavailable(reason: "no VFIO device cdev for \(pci.address) (kernel without CONFIG_VFIO_DEVICE_CDEV)")
            }
            let fd = try IOMMUFD()
            let ioas = try fd.allocIOAS()
            guard case .success(let i) = ioas.info() else { throw UsageError("IOMMU_IOAS_IOVA_RANGES failed") }
            self.iommufd = fd
            self.ioas = ioas
            self.space = ioas
            self.container = nil
            self.group = nil
            self.info = i
            self.iova = IOVAAllocator(ranges: i.iovaRanges)
            return
            #else
            throw BackendUnavailable(reason: "built without iommufd UAPI headers (run scripts/fetch-uapi.sh, then rebuild)")
            #endif
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw BackendUnavailable(reason: path == "/dev/iommu" ? "no /dev/iommu (kernel without CONFIG_IOMMUFD)"
                                                                  : "no \(path) (kernel without CONFIG_VFIO_CONTAINER, or vfio not loaded)")
        }
        let container: Container
        do { container = try Container(path: path) } catch {
            throw UsageError("\(error)")
        }
        guard case .success(let v) = container.apiVersion(), v == VFIO_API_VERSION else {
            throw UsageError("\(path): unexpected VFIO API version")
        }
        let type = backend.iommuType
        guard container.checkExtension(type.uapiValue) else {
            throw BackendUnavailable(reason: "\(path) does not offer \(type.rawValue) (VFIO_CHECK_EXTENSION)")
        }
        let group: Group
        do { group = try Group(number: number) } catch {
            throw UsageError("\(error)" + (error.errno == .permissionDenied ? " (run as root or chown /dev/vfio/\(number))" : ""))
        }
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
        self.container = container
        self.space = container
        self.group = group
        self.iova = IOVAAllocator(ranges: info.iovaRanges)
    }

    /// /dev/vfio/devices/vfioN of a PCI device, from sysfs.
    static func cdev(_ address: String) -> String? {
        let dir = "\(PCIDevice.sysfs)/\(address)/vfio-dev"
        guard let name = (try? FileManager.default.contentsOfDirectory(atPath: dir))?.first(where: { $0.hasPrefix("vfio") }) else { return nil }
        return "/dev/vfio/devices/\(name)"
    }

    func openDevice() throws {
        let dev: Device
        if let group {
            dev = try group.device(mdev?.uuid ?? pci.address)
        } else {
            #if IOMMUFD_UAPI
            dev = try openCdev(pci.address)
            #else
            throw UsageError("no group and no iommufd")
            #endif
        }
        device = dev
        // Attaching a device adds its reserved regions (the MSI window) to an IOAS's ranges.
        if group == nil, case .success(let i) = space.info() {
            info = i
            iova.ranges = i.iovaRanges.isEmpty ? iova.ranges : i.iovaRanges
        }
        if backend == .mdevPin { pins = ExternalPins(device: dev) }
        if let p = options.peer, !backend.isMdev { openPeer(p) }
        for r in try (backend.isMdev ? [] : dev.bars()) where r.index <= 5 {
            let name = "BAR\(r.index)"
            var mem: MappedMemory?
            if r.mmappable { mem = try? dev.mmap(r) }
            bars.append(BARMapping(name: name, region: r, memory: mem, device: dev))
        }
        guard options.dataCheck else { dmaUnavailable = "data check disabled"; return }
        var engines: [DMADriver] = []
        switch backend {
        case .mdevMap:
            dmaUnavailable = "map only: a container holding only an mdev group pins nothing"
            return
        case .mdevPin:
            guard let pins else { return }
            engines = [MdevRWDriver(pins: pins)]
        default:
            let bar0 = bars.first(where: { $0.name == "BAR0" })?.memory
            if NVMeDevice.matches(pci.address), let bar0 {
                // Not fatal: the cases still run, their data checks say why they could not.
                do { try openNVMe(device: dev, bar0: bar0, address: pci.address) } catch { dmaUnavailable = "\(error)" }
            } else if EduDriver.matches(pci), let bar0 {
                guard let edu = try EduDriver.open(device: dev, bar0: bar0) else {
                    dmaUnavailable = "edu BAR0 does not answer its liveness register"
                    return
                }
                engines = [edu]
            }
            engines += try helperEngines()
        }
        guard !engines.isEmpty else { return }
        // A page per engine mapped at its own IOVA: data travels region → device → scratch and
        // back. Shared, so a forked case child writes the very page the IOMMU maps (no COW copy).
        let s = try MappedMemory.map(length: PageSize.base * engines.count, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED | MAP_ANONYMOUS)
        memset(s.base, 0, s.length)
        guard let at = iova.allocate(UInt64(s.length)) else { dmaUnavailable = "no IOVA for the scratch page"; return }
        if case .failure(let e) = space.map(vaddr: s.address, iova: at, size: UInt64(s.length), flags: .readWrite) {
            dmaUnavailable = "scratch page map failed: \(e.symbol)"
            return
        }
        scratch = s
        scratchIOVA = at
        self.engines = engines
    }

    /// The peer's edu engine, if the peer opened and is one, then each --dma-helper's (a helper
    /// that cannot serve is a usage error: the user named it).
    func helperEngines() throws -> [DMADriver] {
        func edu(_ b: BARMapping, _ address: String) throws -> EduDriver? {
            guard let pci = PCIDevice.lookup(address), EduDriver.matches(pci), let mem = b.memory else { return nil }
            return try EduDriver.open(device: b.device, bar0: mem)
        }
        var out: [DMADriver] = []
        // The peer is optional here as for peer-bar: if it cannot serve, the checks run without it.
        if case .success(let b) = peer, let p = options.peer, let e = (try? edu(b, p)) ?? nil { out.append(e) }
        for h in options.helpers {
            let b: BARMapping
            do { b = try openExtraBAR0(h, role: "--dma-helper") } catch { throw UsageError("\(error)") }
            helperBARs.append(b)
            if NVMeDevice.matches(h), let mem = b.memory {
                guard nvme == nil else { throw UsageError("--dma-helper \(h): the session already has an NVMe engine (\(nvmeAddress ?? "?"))") }
                do { try openNVMe(device: b.device, bar0: mem, address: h) } catch { throw UsageError("--dma-helper \(error)") }
                continue
            }
            guard let e = try edu(b, h) else {
                throw UsageError("--dma-helper \(h) is neither an edu device (1234:11e8) that answers nor an NVMe controller (class 01:08:02)")
            }
            out.append(e)
        }
        return out
    }

    #if IOMMUFD_UAPI
    /// A device's cdev bound to this session's iommufd and attached to its IOAS; `opened` gets
    /// the device before the bind, so whoever owns it closes it even when bind or attach fails.
    func openCdev(_ address: String, opened: (Device) -> Void = { _ in }) throws -> Device {
        guard let path = Session.cdev(address), let fd = iommufd, let ioas else { throw UsageError("\(address) has no VFIO cdev") }
        let dev = try Device.openCdev(path, name: address)
        opened(dev)
        _ = try dev.bind(fd)
        try dev.attach(ioas)
        return dev
    }
    #endif

    /// Opens another vfio-pci device into this session's container (through its own group, or
    /// the device's) or IOAS; close() closes it.
    func openExtra(_ address: String, role: String) throws -> Device {
        guard PCIDevice.normalise(address) != pci.address else { throw RegionUnavailable("\(role) \(address) is the device under test") }
        guard let p = PCIDevice.lookup(address) else { throw RegionUnavailable("no PCI device \(address) (\(role))") }
        guard p.driver == "vfio-pci" else { throw RegionUnavailable("\(role) \(address) is bound to \(p.driver ?? "no driver"), not vfio-pci") }
        if let container, let group {
            guard let n = p.iommuGroup else { throw RegionUnavailable("\(role) \(address) has no IOMMU group") }
            if n == group.number {
                let dev = try group.device(p.address)
                extraDevices.append(dev)
                return dev
            }
            let g = try Group(number: n)
            extraGroups.append(g)
            guard try g.status().viable else { throw RegionUnavailable("\(role) \(address): IOMMU group \(n) is not viable") }
            try g.setContainer(container)
            let dev = try g.device(p.address)
            extraDevices.append(dev)
            return dev
        }
        #if IOMMUFD_UAPI
        return try openCdev(p.address) { self.extraDevices.append($0) }
        #else
        throw RegionUnavailable("no group and no iommufd")
        #endif
    }

    /// openExtra, then its BAR0 mmapped (close() unmaps it through `peer` or `helperBARs`).
    func openExtraBAR0(_ address: String, role: String) throws -> BARMapping {
        let dev = try openExtra(address, role: role)
        guard let r = try dev.bars().first(where: { $0.index == 0 }), r.mmappable else {
            throw RegionUnavailable("\(role) \(address) has no mmappable BAR0")
        }
        return BARMapping(name: "BAR0", region: r, memory: try dev.mmap(r), device: dev)
    }

    /// Opens the peer and mmaps its BAR0. Failures only make peer-bar a SKIP with the reason.
    func openPeer(_ address: String) {
        do {
            peer = .success(try openExtraBAR0(address, role: "peer"))
        } catch let e as RegionUnavailable {
            peer = .failure(e)
        } catch {
            peer = .failure(RegionUnavailable("peer \(address): \(error)"))
        }
    }

    func close() {
        closeNVMe()  // first: the controller stops before any mapping or BAR goes away
        if case .success(let b) = peer { b.memory?.unmap() }
        peer = .failure(RegionUnavailable("session closed"))
        engines = []
        for b in helperBARs { b.memory?.unmap() }
        helperBARs = []
        for d in extraDevices {
            #if IOMMUFD_UAPI
            if group == nil { d.detach() }
            #endif
            d.close()
        }
        extraDevices = []
        for g in extraGroups { g.close() }
        extraGroups = []
        if let s = scratch {
            if case .success(let n) = space.unmap(iova: scratchIOVA, size: UInt64(s.length)), n != UInt64(s.length) {
                teardownProblems.append("scratch unmap reported \(n) bytes")
            }
            s.unmap()
            scratch = nil
        }
        for b in bars { b.memory?.unmap() }
        bars.removeAll()
        #if IOMMUFD_UAPI
        if group == nil { device?.detach() }
        #endif
        device?.close()  // before the group: the other order gives EBUSY
        device = nil
        group?.close()
        container?.close()
        #if IOMMUFD_UAPI
        ioas?.destroy()
        iommufd?.close()
        #endif
    }

    /// The Intel IOMMU's page-table dump for this device, if debugfs has it.
    func iommuPageSize(iova: UInt64) -> String? {
        // An mdev-only container has no IOMMU domain: nothing to read.
        backend.isMdev ? nil : IOMMUDebugfs.pageSize(device: pci.address, iova: iova)
    }

    func dmaAvail() -> UInt32? {
        guard info.dmaAvail != nil, case .success(let i) = space.info() else { return nil }
        return i.dmaAvail
    }
}
