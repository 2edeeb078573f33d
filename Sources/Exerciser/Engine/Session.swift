import CVFIO
import Foundation
import SystemPackage
import VFIO

/// One backend's DMA space with the device, its BARs, the DMA engines and the scratch pages
/// the data checks use, and the extra devices (peer, helpers) opened into the same space; torn
/// down in order: unmap → detach → device → group → container. Which backend it is matters
/// only to `backend`.
final class Session {
    let backend: Backend
    var kind: BackendKind { backend.kind }
    var space: DMASpace { backend.space }
    /// The VFIO container, when the backend has one (for VADDR and extensions).
    var container: Container? { backend.vfioContainer }
    let options: RunOptions
    let pci: PCIDevice
    var info: IOMMUInfo
    var iova: IOVAAllocator
    var device: Device?
    var bars: [BARMapping] = []
    /// The device's DMA engine first, then the peer's and the helpers' (edu only).
    var engines: [DMADriver] = []
    var dma: DMADriver? { engines.first }
    /// The peer's own engine among `engines`: not the one to DMA into the peer's BAR.
    var peerEngine: DMADriver?
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
    /// The peer's and the helpers' devices and BAR0 mappings.
    var extraDevices: [Device] = []
    var helperBARs: [BARMapping] = []

    /// mdev-pin: the test module's mdev pins IOVAs on request.
    var pins: ExternalPins?

    init(backend kind: BackendKind, group pciGroup: Int, options: RunOptions, pci: PCIDevice) throws {
        self.options = options
        self.pci = pci
        backend = try Backends.open(kind, pciGroup: pciGroup, pci: pci)
        info = backend.info
        iova = IOVAAllocator(ranges: info.iovaRanges)
    }

    func openDevice() throws {
        let dev = try backend.openDevice(pci)
        device = dev
        // Attaching a device adds its reserved regions (the MSI window) to an IOAS's ranges.
        info = backend.info
        if !info.iovaRanges.isEmpty { iova.ranges = info.iovaRanges }
        if kind == .mdevPin { pins = ExternalPins(device: dev) }
        if let p = options.peer, !kind.isMdev { openPeer(p) }
        for r in try (kind.isMdev ? [] : dev.bars()) where r.index <= 5 {
            let name = "BAR\(r.index)"
            var mem: MappedMemory?
            if r.mmappable { mem = try? dev.mmap(r) }
            bars.append(BARMapping(name: name, region: r, memory: mem, device: dev))
        }
        guard options.dataCheck else { dmaUnavailable = "data check disabled"; return }
        var engines: [DMADriver] = []
        switch kind {
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
        if case .success(let b) = peer, let p = options.peer, let e = (try? edu(b, p)) ?? nil {
            out.append(e)
            peerEngine = e
        }
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

    /// Opens another vfio-pci device into this session's container or IOAS; close() closes it.
    func openExtra(_ address: String, role: String) throws -> Device {
        guard PCIDevice.normalise(address) != pci.address else { throw RegionUnavailable("\(role) \(address) is the device under test") }
        guard let p = PCIDevice.lookup(address) else { throw RegionUnavailable("no PCI device \(address) (\(role))") }
        guard p.driver == "vfio-pci" else { throw RegionUnavailable("\(role) \(address) is bound to \(p.driver ?? "no driver"), not vfio-pci") }
        var dev: Device?
        try backend.openExtra(p, role: role) { d in
            dev = d
            extraDevices.append(d)
        }
        guard let dev else { throw RegionUnavailable("\(role) \(address): not opened") }
        return dev
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
        peerEngine = nil
        for b in helperBARs { b.memory?.unmap() }
        helperBARs = []
        for d in extraDevices {
            backend.detach(d)
            d.close()
        }
        extraDevices = []
        if let s = scratch {
            switch space.unmap(iova: scratchIOVA, size: UInt64(s.length)) {
            case .success(let n) where n != UInt64(s.length):
                teardownProblems.append("unmapping the \(s.length)-byte scratch reported \(n) bytes")
            case .failure(let e): teardownProblems.append("unmapping the scratch: \(e.symbol)")
            default: break
            }
            s.unmap()
            scratch = nil
        }
        for b in bars { b.memory?.unmap() }
        bars.removeAll()
        if let d = device { backend.detach(d) }
        device?.close()  // before the group: the other order gives EBUSY
        device = nil
        backend.close()
    }

    /// The Intel IOMMU's page-table dump for this device, if debugfs has it.
    func iommuPageSize(iova: UInt64) -> String? {
        // An mdev-only container has no IOMMU domain: nothing to read.
        backend.hasIOMMUDomain ? IOMMUDebugfs.pageSize(device: pci.address, iova: iova) : nil
    }

    func dmaAvail() -> UInt32? {
        guard info.dmaAvail != nil, case .success(let i) = space.info() else { return nil }
        return i.dmaAvail
    }
}
