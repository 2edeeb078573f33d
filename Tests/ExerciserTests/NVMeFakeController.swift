import Foundation
import Glibc
import XCTest
import VFIO
@testable import Exerciser

/// An IOMMU for the fake controller: IOVA windows onto host memory, each with the directions
/// the device may use. A DMA outside them, or against a window's direction, is a fault.
final class FakeNVMeIOMMU: DMAMemory {
    struct Window { var iova: UInt64; var base: UnsafeMutableRawPointer; var length: Int; var flags: DMAFlags }
    var windows: [Window] = []
    var faults: [String] = []
    var owned: [MappedMemory] = []
    var next: UInt64 = 0x8000_0000

    func map(_ iova: UInt64, _ base: UnsafeMutableRawPointer, _ length: Int, _ flags: DMAFlags = .readWrite) {
        windows.append(Window(iova: iova, base: base, length: length, flags: flags))
    }

    func allocate(_ bytes: Int) throws -> DMABuffer {
        let len = (bytes + 4095) & ~4095
        let m = try MappedMemory.map(length: len, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS)
        owned.append(m)
        let at = next
        next += UInt64(len + 0x10_0000) & ~0xFFFFF  // a gap: a stray page offset lands in no window
        map(at, m.base, len)
        return DMABuffer(pointer: m.base, iova: at, length: len)
    }

    /// Host memory behind [iova, iova+count) for a device access in `direction`.
    func host(_ iova: UInt64, _ count: Int, _ direction: DMAFlags) -> UnsafeMutableRawPointer? {
        for w in windows where iova >= w.iova && iova + UInt64(count) <= w.iova + UInt64(w.length) {
            guard w.flags.contains(direction) else {
                faults.append("0x\(String(iova, radix: 16)): \(direction == .write ? "write" : "read") to a window without that flag")
                return nil
            }
            return w.base + Int(iova - w.iova)
        }
        faults.append("0x\(String(iova, radix: 16)) (+\(count)) is not mapped")
        return nil
    }
}

/// A controller model good enough to drive the driver and the data check: registers, doorbells,
/// admin and I/O queues with phase tags and wrap, PRP1/PRP2/PRP lists, MDTS, Identify, Read and
/// Compare on a namespace whose every 4 KiB names its number. Fails the test on any opcode
/// outside the driver's allowlist.
final class FakeNVMe: NVMeRegisters {
    let iommu: FakeNVMeIOMMU
    // Knobs.
    var mqes = 63
    var dstrd = 1
    var mpsMin = 0
    var timeoutUnits: UInt64 = 2
    var mdts = 5  // 2^5 × 4 KiB = 128 KiB
    var oncs: UInt16 = 0x1  // Compare
    var blockShift = 12
    var neverReady = false
    var fatalOnEnable = false
    /// I/O commands are taken from the SQ but never completed.
    var dropIOCompletions = false
    /// Completions wait for the next CSTS read and are then posted newest first.
    var deferCompletions = false
    var onForbidden: (String) -> Void = { XCTFail($0) }
    /// A broken device: Compare always reports success.
    var compareAlwaysSucceeds = false
    /// A broken device: Read reports success and transfers nothing.
    var readsMoveNothing = false
    /// A broken device: every Read leaves this 512-byte sector of its transfer unwritten.
    var readsSkipSector: Int?

    // What happened.
    var adminOpcodes: [UInt8] = []
    var ioOpcodes: [UInt8] = []
    var ioCommands: [NVMeCommand] = []
    var forbidden: [String] = []
    var ccWrites: [UInt32] = []
    var ien: [Int: Bool] = [:]
    var maxOutstanding = 0

    // Registers and queues.
    var cc: UInt32 = 0
    var csts: UInt32 = 0
    var aqa: UInt32 = 0
    var asq: UInt64 = 0
    var acq: UInt64 = 0
    struct SQ { var iova: UInt64; var size: Int; var cq: Int; var head = 0 }
    struct CQ { var iova: UInt64; var size: Int; var tail = 0; var head = 0; var phase = true }
    var sqs: [Int: SQ] = [:]
    var cqs: [Int: CQ] = [:]
    var pending: [(cq: Int, dwords: [UInt32])] = []

    let namespace: [UInt8]
    var blocks: UInt64 { UInt64(namespace.count >> blockShift) }

    /// The image the VM harness writes: each 4 KiB block starts with its number (LE UInt64),
    /// then a pattern that depends on block and offset.
    static func image(bytes: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: bytes)
        for b in 0..<(bytes / 4096) {
            let base = b * 4096
            withUnsafeBytes(of: UInt64(b).littleEndian) { for i in 0..<8 { out[base + i] = $0[i] } }
            for i in 8..<4096 { out[base + i] = UInt8(truncatingIfNeeded: i &* 31 &+ b &* 7 &+ 1) }
        }
        return out
    }

    init(iommu: FakeNVMeIOMMU, namespaceBytes: Int = 4 << 20, image: [UInt8]? = nil) {
        self.iommu = iommu
        namespace = image ?? Self.image(bytes: namespaceBytes)
    }

    var stride: Int { 4 << dstrd }
    var capValue: UInt64 {
        UInt64(mqes) | 1 << 16 | timeoutUnits << 24 | UInt64(dstrd) << 32 | 1 << 37 | UInt64(mpsMin) << 48 | UInt64(mpsMin + 4) << 52
    }
    var pageSize: Int { 4096 << mpsMin }

    func read32(_ o: Int) -> UInt32 {
        switch o {
        case NVMeReg.cap: return UInt32(truncatingIfNeeded: capValue)
        case NVMeReg.cap + 4: return UInt32(capValue >> 32)
        case NVMeReg.vs: return 0x0001_0400
        case NVMeReg.cc: return cc
        case NVMeReg.csts:
            if deferCompletions { flushDeferred() }
            return csts
        case NVMeReg.aqa: return aqa
        default: return 0
        }
    }

    func read64(_ o: Int) -> UInt64 { UInt64(read32(o)) | UInt64(read32(o + 4)) << 32 }

    func write64(_ o: Int, _ v: UInt64) {
        write32(o, UInt32(truncatingIfNeeded: v))
        write32(o + 4, UInt32(v >> 32))
    }

    func write32(_ o: Int, _ v: UInt32) {
        switch o {
        case NVMeReg.cc:
            ccWrites.append(v)
            let was = cc & 1
            cc = v
            if v & 1 == 0 {
                csts = 0
                sqs = [:]; cqs = [:]; pending = []
            } else if was == 0 {
                if fatalOnEnable { csts = NVMeReg.cstsFatal; return }
                guard !neverReady else { return }
                guard Int(v >> 7 & 0xF) == mpsMin, v >> 16 & 0xF == 6, v >> 20 & 0xF == 4, v >> 4 & 7 == 0 else {
                    XCTFail("CC 0x\(String(v, radix: 16)) is not NVM / MPSMIN / 64-byte SQE / 16-byte CQE")
                    return
                }
                let asqs = Int(aqa & 0xFFF) + 1, acqs = Int(aqa >> 16 & 0xFFF) + 1
                XCTAssertEqual(asq % UInt64(pageSize), 0)
                sqs[0] = SQ(iova: asq, size: asqs, cq: 0)
                cqs[0] = CQ(iova: acq, size: acqs)
                csts = NVMeReg.cstsReady
            }
        case NVMeReg.aqa: aqa = v
        case NVMeReg.asq: asq = asq & ~0xFFFF_FFFF | UInt64(v)
        case NVMeReg.asq + 4: asq = asq & 0xFFFF_FFFF | UInt64(v) << 32
        case NVMeReg.acq: acq = acq & ~0xFFFF_FFFF | UInt64(v)
        case NVMeReg.acq + 4: acq = acq & 0xFFFF_FFFF | UInt64(v) << 32
        case let d where d >= NVMeReg.doorbellBase:
            let index = (d - NVMeReg.doorbellBase) / stride
            XCTAssertEqual((d - NVMeReg.doorbellBase) % stride, 0, "doorbell off the CAP.DSTRD stride")
            if index % 2 == 0 { ringSQ(index / 2, tail: Int(v)) } else { cqs[index / 2]?.head = Int(v) }
        default: break
        }
    }

    func ringSQ(_ qid: Int, tail: Int) {
        guard csts & NVMeReg.cstsReady != 0, var sq = sqs[qid] else { XCTFail("doorbell of SQ \(qid), which does not exist"); return }
        XCTAssertLessThan(tail, sq.size)
        var outstanding = 0
        while sq.head != tail {
            guard let p = iommu.host(sq.iova + UInt64(sq.head * 64), 64, .read) else { XCTFail("SQ entry unreachable"); return }
            let c = NVMeCommand.load(from: p)
            sq.head = (sq.head + 1) % sq.size
            sqs[qid] = sq
            outstanding += 1
            let (status, result) = qid == 0 ? execAdmin(c) : execIO(c)
            if qid != 0 && dropIOCompletions { continue }
            let field = UInt32(status.sct & 7) << 9 | UInt32(status.sc & 0xFF) << 1
            let dwords = [result, 0, UInt32(sq.head) | UInt32(qid) << 16, UInt32(c.cid) | field << 16]
            if deferCompletions && qid != 0 { pending.append((sq.cq, dwords)) } else { post(sq.cq, dwords) }
        }
        maxOutstanding = max(maxOutstanding, outstanding, pending.count)
    }

    func flushDeferred() {
        let all = pending
        pending = []
        for p in all.reversed() { post(p.cq, p.dwords) }
    }

    func post(_ cqid: Int, _ d: [UInt32]) {
        guard var cq = cqs[cqid] else { XCTFail("completion for CQ \(cqid), which does not exist"); return }
        guard (cq.tail + 1) % cq.size != cq.head else { XCTFail("CQ \(cqid) overflow: the host let more commands out than it holds"); return }
        guard let p = iommu.host(cq.iova + UInt64(cq.tail * 16), 16, .write) else { XCTFail("CQ entry unreachable"); return }
        for i in 0..<3 { p.storeBytes(of: d[i], toByteOffset: 4 * i, as: UInt32.self) }
        p.storeBytes(of: d[3] | (cq.phase ? 1 << 16 : 0), toByteOffset: 12, as: UInt32.self)
        cq.tail += 1
        if cq.tail == cq.size { cq.tail = 0; cq.phase.toggle() }
        cqs[cqid] = cq
    }

    func forbid(_ what: String) -> (NVMeStatus, UInt32) {
        forbidden.append(what)
        onForbidden("fake NVMe received forbidden \(what)")
        return (NVMeStatus(sct: 0, sc: 1), 0)
    }

    static let ok = NVMeStatus.success
    static let invalidField = NVMeStatus(sct: 0, sc: 2)
    static let transferError = NVMeStatus(sct: 0, sc: 4)

    // MARK: data movement

    /// The host pages of a PRP-described transfer, or nil on a bad PRP or an IOMMU fault.
    func prpSegments(_ c: NVMeCommand, bytes: Int) -> [(UInt64, Int)]? {
        let ps = UInt64(pageSize)
        let first = min(bytes, Int(ps - c.prp1 % ps))
        var segs = [(c.prp1, first)]
        var left = bytes - first
        if left == 0 { return segs }
        if left <= Int(ps) {
            guard c.prp2 % ps == 0 else { return nil }
            segs.append((c.prp2, left))
            return segs
        }
        guard c.prp2 % 8 == 0, let list = iommu.host(c.prp2, Int(ps - c.prp2 % ps), .read) else { return nil }
        var i = 0
        while left > 0 {
            guard i < Int(ps - c.prp2 % ps) / 8 else { return nil }  // no list chaining in this model
            let e = list.load(fromByteOffset: 8 * i, as: UInt64.self)
            guard e % ps == 0 else { return nil }
            segs.append((e, min(left, Int(ps))))
            left -= min(left, Int(ps))
            i += 1
        }
        return segs
    }

    func dmaOut(_ c: NVMeCommand, _ data: ArraySlice<UInt8>) -> Bool {
        guard let segs = prpSegments(c, bytes: data.count) else { return false }
        var at = data.startIndex
        let skip = readsSkipSector.map { data.startIndex + $0 * 512 }
        for (iova, n) in segs {
            guard let p = iommu.host(iova, n, .write) else { return false }
            data[at..<(at + n)].withUnsafeBytes { src in
                for o in Swift.stride(from: 0, to: n, by: 512) where at + o != skip {
                    (p + o).copyMemory(from: src.baseAddress! + o, byteCount: min(512, n - o))
                }
            }
            at += n
        }
        return true
    }

    func dmaIn(_ c: NVMeCommand, bytes: Int) -> [UInt8]? {
        guard let segs = prpSegments(c, bytes: bytes) else { return nil }
        var out: [UInt8] = []
        for (iova, n) in segs {
            guard let p = iommu.host(iova, n, .read) else { return nil }
            out += UnsafeRawBufferPointer(start: p, count: n)
        }
        return out
    }

    // MARK: commands

    func execAdmin(_ c: NVMeCommand) -> (NVMeStatus, UInt32) {
        adminOpcodes.append(c.opcode)
        guard NVMeAdminOpcode(rawValue: c.opcode) != nil else { return forbid(String(format: "admin opcode 0x%02x", c.opcode)) }
        let qid = Int(c.cdw10 & 0xFFFF), size = Int(c.cdw10 >> 16) + 1
        switch NVMeAdminOpcode(rawValue: c.opcode)! {
        case .identify:
            var d = [UInt8](repeating: 0, count: 4096)
            func put<T: FixedWidthInteger>(_ v: T, _ at: Int) { withUnsafeBytes(of: v.littleEndian) { for (i, b) in $0.enumerated() { d[at + i] = b } } }
            switch c.cdw10 & 0xFF {
            case 1:
                put(UInt16(0x1b36), 0)
                for (i, ch) in "vfioex".utf8.enumerated() { d[4 + i] = ch }
                d[77] = UInt8(mdts)
                d[512] = 0x66; d[513] = 0x44
                put(UInt32(1), 516)
                put(oncs, 520)
            case 0:
                guard c.nsid == 1 else { return (NVMeStatus(sct: 0, sc: 0x0B), 0) }
                put(blocks, 0); put(blocks, 8); put(blocks, 16)
                put(UInt32(blockShift) << 16, 128)
            case 2:
                put(UInt32(1), 0)
            default:
                return (Self.invalidField, 0)
            }
            return (dmaOut(c, d[...]) ? Self.ok : Self.transferError, 0)
        case .setFeatures:
            guard c.cdw10 & 0xFF == 7 else { return forbid("Set Features 0x\(String(c.cdw10 & 0xFF, radix: 16))") }
            return (Self.ok, 0)
        case .getFeatures:
            return (Self.ok, 0)
        case .createIOCQ:
            guard qid > 0, size <= mqes + 1, c.cdw11 & 1 == 1 else { return (NVMeStatus(sct: 1, sc: 2), 0) }
            ien[qid] = c.cdw11 & 2 != 0
            cqs[qid] = CQ(iova: c.prp1, size: size)
            return (Self.ok, 0)
        case .createIOSQ:
            let cq = Int(c.cdw11 >> 16)
            guard cqs[cq] != nil, qid > 0 else { return (NVMeStatus(sct: 1, sc: 0), 0) }
            guard size <= mqes + 1, c.cdw11 & 1 == 1 else { return (NVMeStatus(sct: 1, sc: 2), 0) }
            sqs[qid] = SQ(iova: c.prp1, size: size, cq: cq)
            return (Self.ok, 0)
        case .deleteIOSQ:
            return (sqs.removeValue(forKey: qid) != nil ? Self.ok : NVMeStatus(sct: 1, sc: 1), 0)
        case .deleteIOCQ:
            guard !sqs.values.contains(where: { $0.cq == qid }) else { return (NVMeStatus(sct: 1, sc: 0x0C), 0) }
            return (cqs.removeValue(forKey: qid) != nil ? Self.ok : NVMeStatus(sct: 1, sc: 1), 0)
        }
    }

    func execIO(_ c: NVMeCommand) -> (NVMeStatus, UInt32) {
        ioOpcodes.append(c.opcode)
        ioCommands.append(c)
        guard let op = NVMeIOOpcode(rawValue: c.opcode) else { return forbid(String(format: "I/O opcode 0x%02x", c.opcode)) }
        guard c.nsid == 1 else { return (NVMeStatus(sct: 0, sc: 0x0B), 0) }
        let lba = UInt64(c.cdw10) | UInt64(c.cdw11) << 32, n = Int(c.cdw12 & 0xFFFF) + 1
        let bytes = n << blockShift
        if mdts > 0 && bytes > (pageSize << mdts) { return (Self.invalidField, 0) }
        guard lba + UInt64(n) <= blocks else { return (NVMeStatus(sct: 0, sc: 0x80), 0) }
        let at = Int(lba) << blockShift
        switch op {
        case .read:
            if readsMoveNothing { return (Self.ok, 0) }
            return (dmaOut(c, namespace[at..<(at + bytes)]) ? Self.ok : Self.transferError, 0)
        case .compare:
            guard let got = dmaIn(c, bytes: bytes) else { return (Self.transferError, 0) }
            return (compareAlwaysSucceeds || got[...] == namespace[at..<(at + bytes)] ? Self.ok : .compareFailure, 0)
        }
    }
}
