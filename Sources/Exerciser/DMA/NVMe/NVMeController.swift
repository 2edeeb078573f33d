import CVFIO
import Foundation
import VFIO

/// BAR0 of an NVMe controller; a fake stands in for tests.
public protocol NVMeRegisters: AnyObject {
    func read32(_ offset: Int) -> UInt32
    func write32(_ offset: Int, _ value: UInt32)
    func read64(_ offset: Int) -> UInt64
    func write64(_ offset: Int, _ value: UInt64)
}

/// Memory the device can reach: `length` bytes at `pointer` for the CPU, at `iova` for the device.
public struct DMABuffer {
    public let pointer: UnsafeMutableRawPointer
    public let iova: UInt64
    public let length: Int
    public init(pointer: UnsafeMutableRawPointer, iova: UInt64, length: Int) {
        self.pointer = pointer
        self.iova = iova
        self.length = length
    }
}

/// Hands out zeroed, page-aligned memory mapped for the device in the session's DMA space, so the
/// driver never knows the backend. The allocator unmaps it all after the controller is disabled.
public protocol DMAMemory: AnyObject {
    func allocate(_ bytes: Int) throws -> DMABuffer
}

/// A mmapped BAR0. 64-bit registers go as two 32-bit accesses, low half first: not every
/// controller takes a 64-bit MMIO access.
final class BARRegisters: NVMeRegisters {
    let bar: MappedMemory
    init(_ bar: MappedMemory) { self.bar = bar }
    func read32(_ o: Int) -> UInt32 { cvfio_mmio_read32(bar.base, o) }
    func write32(_ o: Int, _ v: UInt32) { cvfio_mmio_write32(bar.base, o, v) }
    func read64(_ o: Int) -> UInt64 { UInt64(read32(o)) | UInt64(read32(o + 4)) << 32 }
    func write64(_ o: Int, _ v: UInt64) {
        write32(o, UInt32(truncatingIfNeeded: v))
        write32(o + 4, UInt32(v >> 32))
    }
}

/// One submission queue and its completion queue.
final class NVMeQueue {
    let qid: Int
    let entries: Int
    let sq: DMABuffer
    let cq: DMABuffer
    /// tail, head, phase in MAP_SHARED memory: each case runs in a forked child, and the next
    /// child must start where the last one left the queue.
    let state: UnsafeMutablePointer<Int>
    var tail: Int { get { state[0] } set { state[0] = newValue } }
    var head: Int { get { state[1] } set { state[1] = newValue } }
    var phase: Bool { get { state[2] != 0 } set { state[2] = newValue ? 1 : 0 } }

    init(qid: Int, entries: Int, memory: DMAMemory, state: UnsafeMutablePointer<Int>) throws {
        self.qid = qid
        self.entries = entries
        self.state = state
        state[0] = 0; state[1] = 0; state[2] = 1  // tail, head, phase
        sq = try memory.allocate(entries * NVMeCommand.size)
        cq = try memory.allocate(entries * 16)
    }

    /// The completion at the head, if the controller has posted it (its phase tag flipped).
    func peek() -> NVMeCompletion? {
        let at = head * 16
        let d3 = cvfio_mmio_read32(cq.pointer, at + 12)
        guard (d3 >> 16 & 1 != 0) == phase else { return nil }
        cvfio_dma_fence()
        return NVMeCompletion(dwords: [cvfio_mmio_read32(cq.pointer, at), 0, cvfio_mmio_read32(cq.pointer, at + 8), d3])
    }

    func advanceHead() {
        head += 1
        if head == entries { head = 0; phase.toggle() }
    }
}

/// A userspace NVMe driver that can only read: bring-up, Identify, one polled I/O queue pair,
/// Read and Compare. Every queue and PRP list lives in memory from `DMAMemory`.
final class NVMeController {
    /// Transfers are capped here even when MDTS allows more (MDTS 0 is "no limit").
    static let transferCap = 1 << 20
    static let ioDepth = 32

    let regs: NVMeRegisters
    let memory: DMAMemory
    let cap: NVMeCap
    /// Controller memory page size (CC.MPS = CAP.MPSMIN).
    let pageSize: Int
    let commandTimeout: Double
    let readyTimeout: Double
    private(set) var admin: NVMeQueue!
    private(set) var io: NVMeQueue?
    private(set) var identity: NVMeControllerIdentity!
    private(set) var nsid: UInt32 = 0
    private(set) var namespace: NVMeNamespaceIdentity!
    private(set) var maxTransfer = 0
    var scratch: DMABuffer!
    var prpLists: DMABuffer!
    /// Set once the controller cannot be trusted (a timeout, a fatal status): it has been disabled.
    private(set) var failed: String?
    /// Queue state and a failed flag, shared with forked case children.
    let shared: MappedMemory
    var sharedFailed: Bool { get { shared.base.load(fromByteOffset: 64, as: Int.self) != 0 } set { shared.base.storeBytes(of: newValue ? 1 : 0, toByteOffset: 64, as: Int.self) } }
    /// Test and --inject hook: rewrites the PRP pages of I/O command `index` of a batch.
    var prpMutation: ((_ index: Int, _ pages: inout [UInt64]) -> Void)?

    /// Brings the controller up to one ready I/O queue pair on namespace `nsid` (the first
    /// active one). `readyTimeout` overrides CAP.TO (tests).
    init(registers: NVMeRegisters, memory: DMAMemory, commandTimeout: Double = 5, readyTimeout: Double? = nil) throws {
        regs = registers
        self.memory = memory
        self.commandTimeout = commandTimeout
        let raw = registers.read64(NVMeReg.cap)
        guard raw != UInt64.max else { throw DMAError(description: "nvme: CAP reads all ones (device gone or memory decoding off)") }
        cap = NVMeCap(raw: raw)
        guard cap.supportsNVMCommandSet else { throw DMAError(description: "nvme: CAP.CSS does not offer the NVM command set") }
        guard cap.mpsMin <= 4 else { throw DMAError(description: "nvme: CAP.MPSMIN asks for \(4096 << cap.mpsMin)-byte pages") }
        pageSize = 4096 << cap.mpsMin
        self.readyTimeout = readyTimeout ?? max(cap.readyTimeout, 0.5)
        do { shared = try MappedMemory.map(length: 4096, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED | MAP_ANONYMOUS) } catch {
            throw DMAError(description: "nvme: \(error)")
        }
        try disable()
        try bringUp()
    }

    func fail(_ message: String) -> DMAError {
        if failed == nil {
            failed = message
            sharedFailed = true
            try? disable()
        }
        return DMAError(description: message)
    }

    func csts() throws -> UInt32 {
        let v = regs.read32(NVMeReg.csts)
        guard v != UInt32.max else { throw DMAError(description: "nvme: CSTS reads all ones (device gone or memory decoding off)") }
        return v
    }

    func waitReady(_ ready: Bool) throws {
        let deadline = Date().addingTimeInterval(readyTimeout)
        while true {
            let s = try csts()
            if ready && s & NVMeReg.cstsFatal != 0 {
                throw DMAError(description: "nvme: controller fatal status (CSTS.CFS) while enabling; it was disabled again")
            }
            if (s & NVMeReg.cstsReady != 0) == ready { return }
            if Date() > deadline {
                throw DMAError(description: "nvme: CSTS.RDY did not become \(ready ? 1 : 0) within \(readyTimeout) s (CAP.TO)")
            }
            usleep(1000)
        }
    }

    /// CC.EN = 0, then RDY = 0: every queue is gone and no DMA continues. Clears CSTS.CFS.
    func disable() throws {
        regs.write32(NVMeReg.cc, 0)
        try waitReady(false)
    }

    private func bringUp() throws {
        let adminEntries = min(16, cap.maxQueueEntries)
        admin = try NVMeQueue(qid: 0, entries: adminEntries, memory: memory, state: shared.base.bindMemory(to: Int.self, capacity: 8))
        scratch = try memory.allocate(4096)
        for b in [admin.sq, admin.cq, scratch!] where b.iova % UInt64(pageSize) != 0 {
            throw DMAError(description: "nvme: DMA memory at IOVA 0x\(String(b.iova, radix: 16)) is not \(pageSize)-byte aligned")
        }
        regs.write32(NVMeReg.aqa, UInt32(adminEntries - 1) << 16 | UInt32(adminEntries - 1))
        regs.write64(NVMeReg.asq, admin.sq.iova)
        regs.write64(NVMeReg.acq, admin.cq.iova)
        regs.write32(NVMeReg.cc, NVMeReg.cc(mps: cap.mpsMin))
        do { try waitReady(true) } catch { try? disable(); throw error }

        let ctrl = try identify(cns: 1, nsid: 0)
        identity = NVMeControllerIdentity(ctrl)
        if identity.sqes != 0 && !(Int(identity.sqes & 0xF)...Int(identity.sqes >> 4)).contains(6) {
            throw DMAError(description: "nvme: Identify SQES 0x\(String(identity.sqes, radix: 16)) does not allow 64-byte entries")
        }
        if identity.cqes != 0 && !(Int(identity.cqes & 0xF)...Int(identity.cqes >> 4)).contains(4) {
            throw DMAError(description: "nvme: Identify CQES 0x\(String(identity.cqes, radix: 16)) does not allow 16-byte entries")
        }
        maxTransfer = identity.maxTransfer(minPage: pageSize, cap: min(Self.transferCap, pageSize / 8 * pageSize))
        try pickNamespace()
        // Number of Queues is set once after reset; a controller that refuses it still gets queue 1.
        _ = try adminCommand(NVMeCommand(opcode: NVMeAdminOpcode.setFeatures.rawValue, cdw10: NVMeAllowlist.numberOfQueues))
        let depth = min(Self.ioDepth, cap.maxQueueEntries)
        let q = try NVMeQueue(qid: 1, entries: depth, memory: memory, state: (shared.base + 32).bindMemory(to: Int.self, capacity: 4))
        try adminOK(NVMeCommand(opcode: NVMeAdminOpcode.createIOCQ.rawValue, prp1: q.cq.iova,
                                cdw10: UInt32(depth - 1) << 16 | 1, cdw11: 1))  // PC=1, IEN=0
        try adminOK(NVMeCommand(opcode: NVMeAdminOpcode.createIOSQ.rawValue, prp1: q.sq.iova,
                                cdw10: UInt32(depth - 1) << 16 | 1, cdw11: 1 << 16 | 1))  // CQID 1, PC=1
        io = q
        prpLists = try memory.allocate(depth * pageSize)
    }

    private func pickNamespace() throws {
        var candidates: [UInt32] = []
        let list = try adminCommand(identifyCommand(cns: 2, nsid: 0))
        if list.isSuccess {
            for i in 0..<1024 {
                let id = scratch.pointer.load(fromByteOffset: 4 * i, as: UInt32.self)
                if id == 0 { break }
                candidates.append(id)
            }
        } else {
            candidates = [1]  // NVMe 1.0: no active namespace list
        }
        var why: [String] = []
        for id in candidates where id != 0 && id != UInt32.max {
            let ns = NVMeNamespaceIdentity(try identify(cns: 0, nsid: id))
            if ns.size == 0 { why.append("nsid \(id) is inactive"); continue }
            if ns.metadataBytes != 0 { why.append("nsid \(id) has \(ns.metadataBytes) metadata bytes per block"); continue }
            if !(9...16).contains(ns.lbaDataShift) { why.append("nsid \(id) has LBADS \(ns.lbaDataShift)"); continue }
            nsid = id
            namespace = ns
            return
        }
        throw DMAError(description: "nvme: no usable namespace" + (why.isEmpty ? "" : " (\(why.joined(separator: "; ")))"))
    }

    func identifyCommand(cns: UInt32, nsid: UInt32) -> NVMeCommand {
        memset(scratch.pointer, 0, 4096)
        return NVMeCommand(opcode: NVMeAdminOpcode.identify.rawValue, nsid: nsid, prp1: scratch.iova, cdw10: cns)
    }

    func identify(cns: UInt32, nsid: UInt32) throws -> UnsafeRawPointer {
        try adminOK(identifyCommand(cns: cns, nsid: nsid))
        return UnsafeRawPointer(scratch.pointer)
    }

    func adminOK(_ c: NVMeCommand) throws {
        let s = try adminCommand(c)
        guard s.isSuccess else { throw DMAError(description: "nvme: \(c.name(admin: true)) failed: \(s)") }
    }

    /// One admin command, waited for.
    func adminCommand(_ c: NVMeCommand) throws -> NVMeStatus {
        try run([c], on: admin, isAdmin: true)[0]
    }

    /// Commands on `q`, as many in flight as the queue holds; returns each one's status.
    func run(_ commands: [NVMeCommand], on q: NVMeQueue, isAdmin: Bool, prepare: ((_ index: Int, _ slot: Int, inout NVMeCommand) throws -> Void)? = nil) throws -> [NVMeStatus] {
        if let failed { throw DMAError(description: "nvme: controller unusable: \(failed)") }
        if sharedFailed { throw DMAError(description: "nvme: controller unusable: disabled after a failure in an earlier case") }
        for c in commands { try NVMeAllowlist.check(c, admin: isAdmin) }
        let stride = cap.doorbellStride
        let slots = q.entries - 1
        var free = Array((0..<slots).reversed())
        var outstanding: [Int: (index: Int, deadline: Date)] = [:]
        var statuses = [NVMeStatus?](repeating: nil, count: commands.count)
        var next = 0
        var spins = 0
        while next < commands.count || !outstanding.isEmpty {
            var queued = false
            while next < commands.count, let slot = free.popLast() {
                var c = commands[next]
                c.cid = UInt16(slot)
                try prepare?(next, slot, &c)
                try NVMeAllowlist.check(c, admin: isAdmin)  // what goes into the queue, after any hook
                c.store(to: q.sq.pointer + q.tail * NVMeCommand.size)
                q.tail = (q.tail + 1) % q.entries
                outstanding[slot] = (next, Date().addingTimeInterval(commandTimeout))
                next += 1
                queued = true
            }
            if queued {
                cvfio_dma_fence()
                regs.write32(NVMeReg.sqTail(q.qid, stride: stride), UInt32(q.tail))
            }
            var reaped = false
            while let e = q.peek() {
                guard e.sqID == q.qid else { throw fail("nvme: completion on queue \(q.qid) names SQ \(e.sqID)") }
                guard e.sqHead < q.entries else { throw fail("nvme: completion reports SQ head \(e.sqHead) of a \(q.entries)-entry queue") }
                guard let o = outstanding.removeValue(forKey: e.cid) else {
                    throw fail("nvme: completion for cid \(e.cid), which is not outstanding on queue \(q.qid)")
                }
                statuses[o.index] = e.status
                free.append(e.cid)
                q.advanceHead()
                reaped = true
            }
            if reaped {
                regs.write32(NVMeReg.cqHead(q.qid, stride: stride), UInt32(q.head))
                spins = 0
                continue
            }
            guard !outstanding.isEmpty else { continue }
            spins += 1
            if spins % 256 == 0 {
                if (try? csts()).map({ $0 & NVMeReg.cstsFatal != 0 }) ?? true {
                    throw fail("nvme: controller fatal status (CSTS.CFS, or CSTS reads all ones) with \(outstanding.count) command(s) outstanding")
                }
                let now = Date()
                if let o = outstanding.min(by: { $0.value.deadline < $1.value.deadline }), o.value.deadline < now {
                    throw fail("nvme: command \(commands[o.value.index].name(admin: isAdmin)) (cid \(o.key)) did not complete within \(commandTimeout) s")
                }
            }
            if spins > 1024 { usleep(spins > 100_000 ? 1000 : 20) }
        }
        return statuses.map { $0! }
    }

    /// A Read or Compare of `blocks` LBAs from `lba` against `bytes` at `iova` (contiguous).
    struct IO {
        var opcode: NVMeIOOpcode
        var lba: UInt64
        var blocks: Int
        var iova: UInt64
    }

    /// I/O commands, up to the queue depth in flight; each one's status in order.
    func run(_ ios: [IO]) throws -> [NVMeStatus] {
        guard let q = io else { throw DMAError(description: "nvme: no I/O queue") }
        let bs = namespace.blockSize
        var cmds: [NVMeCommand] = []
        for x in ios {
            let bytes = x.blocks * bs
            guard x.blocks > 0, x.blocks <= 65536, bytes <= maxTransfer else {
                throw DMAError(description: "nvme: \(x.blocks) blocks is over the transfer limit of \(maxTransfer) bytes")
            }
            guard x.lba + UInt64(x.blocks) <= namespace.size else {
                throw DMAError(description: "nvme: LBAs \(x.lba)+\(x.blocks) past the namespace's \(namespace.size)")
            }
            cmds.append(NVMeCommand(opcode: x.opcode.rawValue, nsid: nsid, cdw10: UInt32(truncatingIfNeeded: x.lba),
                                    cdw11: UInt32(x.lba >> 32), cdw12: UInt32(x.blocks - 1)))
        }
        let listEntries = pageSize / 8
        return try run(cmds, on: q, isAdmin: false) { index, slot, c in
            var pages = prpPages(iova: ios[index].iova, bytes: ios[index].blocks * bs, pageSize: self.pageSize)
            self.prpMutation?(index, &pages)
            guard let first = pages.first, pages.count <= listEntries + 1 else {
                throw DMAError(description: "nvme: \(pages.count) PRP entries for one command")
            }
            c.prp1 = first
            if pages.count == 2 {
                c.prp2 = pages[1]
            } else if pages.count > 2 {
                // One list page per queue slot: it is free again when the slot is.
                let list = self.prpLists.pointer + slot * self.pageSize
                for (i, p) in pages.dropFirst().enumerated() { list.storeBytes(of: p, toByteOffset: 8 * i, as: UInt64.self) }
                c.prp2 = self.prpLists.iova + UInt64(slot * self.pageSize)
            }
        }
    }

    /// Deletes the I/O queues and disables the controller: afterwards it does no DMA, and the
    /// caller may unmap its memory. Returns what went wrong, if anything.
    func shutdown() -> [String] {
        var problems: [String] = []
        if failed == nil, !sharedFailed, let q = io {
            for c in [NVMeCommand(opcode: NVMeAdminOpcode.deleteIOSQ.rawValue, cdw10: UInt32(q.qid)),
                      NVMeCommand(opcode: NVMeAdminOpcode.deleteIOCQ.rawValue, cdw10: UInt32(q.qid))] {
                do { try adminOK(c) } catch { problems.append("\(error)") }
            }
        }
        io = nil
        do { try disable() } catch { problems.append("\(error)") }
        return problems
    }
}
