import CVFIO
import Foundation
import VFIO

/// DMA memory for the NVMe engine: MAP_SHARED (forked case children and the parent see the
/// same queues), mapped read-write in the session's container or IOAS at allocator IOVAs.
final class SessionDMAMemory: DMAMemory {
    unowned let session: Session
    private(set) var buffers: [(memory: MappedMemory, iova: UInt64)] = []

    init(session: Session) { self.session = session }

    func allocate(_ bytes: Int) throws -> DMABuffer {
        let len = (bytes + PageSize.base - 1) / PageSize.base * PageSize.base
        let m: MappedMemory
        do { m = try MappedMemory.map(length: len, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED | MAP_ANONYMOUS) } catch {
            throw DMAError(description: "nvme: DMA memory: \(error)")
        }
        memset(m.base, 0, len)
        guard let at = session.iova.allocate(UInt64(len)) else {
            m.unmap()
            throw DMAError(description: "nvme: no IOVA for \(len) bytes of queue memory")
        }
        if case .failure(let e) = session.space.map(vaddr: m.address, iova: at, size: UInt64(len), flags: .readWrite) {
            m.unmap()
            throw DMAError(description: "nvme: mapping \(len) bytes of queue memory failed: \(e.symbol)")
        }
        buffers.append((m, at))
        return DMABuffer(pointer: m.base, iova: at, length: len)
    }

    /// Maps again what UNMAP_ALL took; returns the bytes that were ours.
    func remap() -> (bytes: UInt64, problems: [String]) {
        var problems: [String] = []
        for b in buffers {
            if case .failure(let e) = session.space.map(vaddr: b.memory.address, iova: b.iova, size: UInt64(b.memory.length), flags: .readWrite) {
                problems.append("re-mapping NVMe queue memory at 0x\(String(b.iova, radix: 16)) failed: \(e.symbol)")
            }
        }
        return (buffers.reduce(0) { $0 + UInt64($1.memory.length) }, problems)
    }

    /// Unmaps everything; call once the controller is disabled.
    func release() -> [String] {
        var problems: [String] = []
        for b in buffers {
            let len = UInt64(b.memory.length)
            switch session.space.unmap(iova: b.iova, size: len) {
            case .success(let n) where n != len: problems.append("NVMe memory unmap reported \(n) of \(len) bytes")
            case .failure(let e): problems.append("NVMe memory unmap: \(e.symbol)")
            default: break
            }
            b.memory.unmap()
        }
        buffers = []
        return problems
    }
}

enum NVMeDevice {
    /// PCI class 01:08:02, mass storage / NVM / NVM Express: any vendor.
    static let pciClass = "0x010802"

    static func matches(_ address: String, sysfs: String = PCIDevice.sysfs) -> Bool {
        let c = try? String(contentsOfFile: "\(sysfs)/\(PCIDevice.normalise(address))/class", encoding: .utf8)
        return c?.trimmingCharacters(in: .whitespacesAndNewlines) == pciClass
    }
}

extension Session {
    /// Brings up the NVMe controller behind `bar0` (bus mastering on) as the session's NVMe
    /// engine, with its queues and reference window in this session's DMA space.
    func openNVMe(device: Device, bar0: MappedMemory, address: String) throws {
        try device.enableBusMaster()
        let memory = SessionDMAMemory(session: self)
        nvmeMemory = memory
        do {
            let c = try NVMeController(registers: BARRegisters(bar0), memory: memory)
            do {
                nvme = try NVMeEngine(controller: c, memory: memory)
            } catch {
                teardownProblems += c.shutdown()
                throw error
            }
        } catch {
            teardownProblems += memory.release()
            nvmeMemory = nil
            throw DMAError(description: "\(address): \(error)")
        }
        nvmeAddress = address
    }

    /// Disables the controller, then unmaps its memory: no DMA outlives the mappings.
    func closeNVMe() {
        if let e = nvme { teardownProblems += e.close() }
        nvme = nil
        if let m = nvmeMemory { teardownProblems += m.release() }
        nvmeMemory = nil
    }
}
