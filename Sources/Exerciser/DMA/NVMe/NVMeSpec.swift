import Foundation

/// The parts of the NVMe base specification the driver uses: register offsets and fields,
/// queue entry layouts, status codes, Identify data. Pure: no device access.
enum NVMeReg {
    static let cap = 0x00, vs = 0x08, cc = 0x14, csts = 0x1C, aqa = 0x24, asq = 0x28, acq = 0x30
    static let doorbellBase = 0x1000

    static let ccEnable: UInt32 = 1
    static let cstsReady: UInt32 = 1, cstsFatal: UInt32 = 2

    /// SQ y tail doorbell at 0x1000 + (2y)·(4 << DSTRD); its CQ head doorbell follows.
    static func sqTail(_ qid: Int, stride: Int) -> Int { doorbellBase + 2 * qid * stride }
    static func cqHead(_ qid: Int, stride: Int) -> Int { doorbellBase + (2 * qid + 1) * stride }

    /// CC for an enabled controller: NVM command set, round robin, no shutdown, 64-byte SQEs,
    /// 16-byte CQEs, memory page size 2^(12+mps).
    static func cc(mps: Int) -> UInt32 {
        ccEnable | UInt32(mps & 0xF) << 7 | 6 << 16 | 4 << 20
    }
}

/// Controller Capabilities.
struct NVMeCap: Equatable {
    let raw: UInt64
    /// Maximum entries per I/O queue (MQES is 0-based).
    var maxQueueEntries: Int { Int(raw & 0xFFFF) + 1 }
    var contiguousQueuesRequired: Bool { raw >> 16 & 1 != 0 }
    /// Worst-case time for CSTS.RDY to follow CC.EN, in seconds (CAP.TO is in 500 ms units).
    var readyTimeout: Double { Double(raw >> 24 & 0xFF) * 0.5 }
    /// Doorbell stride in bytes.
    var doorbellStride: Int { 4 << Int(raw >> 32 & 0xF) }
    var supportsNVMCommandSet: Bool { raw >> 37 & 1 != 0 }
    var mpsMin: Int { Int(raw >> 48 & 0xF) }
    var mpsMax: Int { Int(raw >> 52 & 0xF) }
}

/// Status of a completion: Status Code Type and Status Code.
struct NVMeStatus: Equatable, CustomStringConvertible {
    var sct: Int
    var sc: Int
    var dnr = false

    static let success = NVMeStatus(sct: 0, sc: 0)
    static let compareFailure = NVMeStatus(sct: 2, sc: 0x85)

    /// From the upper half of CQE dword 3 (bit 0 is the phase tag).
    init(field: UInt16) {
        sc = Int(field >> 1 & 0xFF)
        sct = Int(field >> 9 & 0x7)
        dnr = field >> 15 & 1 != 0
    }

    init(sct: Int, sc: Int) {
        self.sct = sct
        self.sc = sc
    }

    var isSuccess: Bool { sct == 0 && sc == 0 }
    static func == (a: NVMeStatus, b: NVMeStatus) -> Bool { a.sct == b.sct && a.sc == b.sc }

    var description: String {
        let names: [Int: [Int: String]] = [
            0: [0x00: "Successful Completion", 0x01: "Invalid Command Opcode", 0x02: "Invalid Field in Command",
                0x04: "Data Transfer Error", 0x06: "Internal Error", 0x07: "Command Abort Requested",
                0x0B: "Invalid Namespace or Format", 0x13: "Invalid PRP Offset", 0x80: "LBA Out of Range",
                0x81: "Capacity Exceeded", 0x82: "Namespace Not Ready"],
            1: [0x00: "Completion Queue Invalid", 0x01: "Invalid Queue Identifier", 0x02: "Invalid Queue Size",
                0x0C: "Invalid Queue Deletion"],
            2: [0x80: "Write Fault", 0x81: "Unrecovered Read Error", 0x85: "Compare Failure", 0x86: "Access Denied"],
        ]
        let name = names[sct]?[sc].map { " \($0)" } ?? ""
        return String(format: "SCT %d SC 0x%02x", sct, sc) + name
    }
}

/// One completion queue entry, as read from memory.
struct NVMeCompletion {
    var result: UInt32
    var sqHead: Int
    var sqID: Int
    var cid: Int
    var phase: Bool
    var status: NVMeStatus

    init(dwords d: [UInt32]) {
        result = d[0]
        sqHead = Int(d[2] & 0xFFFF)
        sqID = Int(d[2] >> 16)
        cid = Int(d[3] & 0xFFFF)
        phase = d[3] >> 16 & 1 != 0
        status = NVMeStatus(field: UInt16(d[3] >> 16))
    }
}

/// The only opcodes this driver can send. Everything that writes, formats, sanitizes or
/// manages namespaces has no case here, and `NVMeAllowlist` checks the bytes actually queued.
enum NVMeAdminOpcode: UInt8, CaseIterable {
    case deleteIOSQ = 0x00, createIOSQ = 0x01, deleteIOCQ = 0x04, createIOCQ = 0x05, identify = 0x06
    case setFeatures = 0x09, getFeatures = 0x0A
}

enum NVMeIOOpcode: UInt8, CaseIterable {
    case read = 0x02, compare = 0x05
}

enum NVMeAllowlist {
    /// Feature Number of Queues: the only feature Set Features may touch.
    static let numberOfQueues: UInt32 = 0x07

    /// Throws unless the submission queue entry is one this driver may send on that queue.
    static func check(_ sqe: NVMeCommand, admin: Bool) throws {
        let op = sqe.opcode
        if admin {
            guard let a = NVMeAdminOpcode(rawValue: op) else { throw refused(op, admin) }
            if a == .setFeatures && sqe.cdw10 & 0xFF != numberOfQueues {
                throw DMAError(description: "nvme: refusing Set Features of feature 0x\(String(sqe.cdw10 & 0xFF, radix: 16)): only Number of Queues is allowed")
            }
        } else {
            guard NVMeIOOpcode(rawValue: op) != nil else { throw refused(op, admin) }
        }
        guard sqe.fuse == 0 else { throw DMAError(description: "nvme: refusing a fused command") }
    }

    static func refused(_ op: UInt8, _ admin: Bool) -> DMAError {
        DMAError(description: String(format: "nvme: refusing %@ opcode 0x%02x: only Identify, queue management and Number of Queues (admin), Read and Compare (I/O) are allowed",
                                     admin ? "admin" : "I/O", op))
    }
}

/// A submission queue entry (64 bytes).
struct NVMeCommand: Equatable {
    var opcode: UInt8
    var fuse: UInt8 = 0
    var cid: UInt16 = 0
    var nsid: UInt32 = 0
    var prp1: UInt64 = 0
    var prp2: UInt64 = 0
    var cdw10: UInt32 = 0, cdw11: UInt32 = 0, cdw12: UInt32 = 0, cdw13: UInt32 = 0, cdw14: UInt32 = 0, cdw15: UInt32 = 0

    static let size = 64

    func store(to p: UnsafeMutableRawPointer) {
        memset(p, 0, Self.size)
        p.storeBytes(of: UInt32(opcode) | UInt32(fuse & 3) << 8 | UInt32(cid) << 16, as: UInt32.self)
        p.storeBytes(of: nsid, toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: prp1, toByteOffset: 24, as: UInt64.self)
        p.storeBytes(of: prp2, toByteOffset: 32, as: UInt64.self)
        for (i, v) in [cdw10, cdw11, cdw12, cdw13, cdw14, cdw15].enumerated() {
            p.storeBytes(of: v, toByteOffset: 40 + 4 * i, as: UInt32.self)
        }
    }

    static func load(from p: UnsafeRawPointer) -> NVMeCommand {
        let d0 = p.loadUnaligned(as: UInt32.self)
        let dw = { (i: Int) in p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self) }
        return NVMeCommand(opcode: UInt8(d0 & 0xFF), fuse: UInt8(d0 >> 8 & 3), cid: UInt16(d0 >> 16), nsid: dw(1),
                           prp1: p.loadUnaligned(fromByteOffset: 24, as: UInt64.self), prp2: p.loadUnaligned(fromByteOffset: 32, as: UInt64.self),
                           cdw10: dw(10), cdw11: dw(11), cdw12: dw(12), cdw13: dw(13), cdw14: dw(14), cdw15: dw(15))
    }

    func name(admin: Bool) -> String {
        let names: [UInt8: String] = admin
            ? [0x00: "Delete I/O SQ", 0x01: "Create I/O SQ", 0x04: "Delete I/O CQ", 0x05: "Create I/O CQ",
               0x06: "Identify", 0x09: "Set Features", 0x0A: "Get Features"]
            : [0x02: "Read", 0x05: "Compare"]
        return names[opcode] ?? String(format: "opcode 0x%02x", opcode)
    }
}

/// Identify Controller fields the driver needs.
struct NVMeControllerIdentity: Equatable {
    var vendor: UInt16
    var serial: String
    var model: String
    /// Maximum Data Transfer Size: 2^mdts units of CAP.MPSMIN pages; 0 is no limit.
    var mdts: Int
    var sqes: UInt8
    var cqes: UInt8
    var namespaces: UInt32
    var oncs: UInt16
    var compareSupported: Bool { oncs & 1 != 0 }

    init(_ d: UnsafeRawPointer) {
        func text(_ off: Int, _ n: Int) -> String {
            String(decoding: (0..<n).map { d.load(fromByteOffset: off + $0, as: UInt8.self) }, as: UTF8.self)
                .trimmingCharacters(in: .whitespaces.union(.controlCharacters))
        }
        vendor = d.loadUnaligned(fromByteOffset: 0, as: UInt16.self)
        serial = text(4, 20)
        model = text(24, 40)
        mdts = Int(d.load(fromByteOffset: 77, as: UInt8.self))
        sqes = d.load(fromByteOffset: 512, as: UInt8.self)
        cqes = d.load(fromByteOffset: 513, as: UInt8.self)
        namespaces = d.loadUnaligned(fromByteOffset: 516, as: UInt32.self)
        oncs = d.loadUnaligned(fromByteOffset: 520, as: UInt16.self)
    }

    /// The largest transfer in bytes, capped at `cap` (MDTS 0 means no limit).
    func maxTransfer(minPage: Int, cap: Int) -> Int {
        guard mdts > 0, mdts < 32 else { return cap }
        let (v, overflow) = minPage.multipliedReportingOverflow(by: 1 << mdts)
        return overflow ? cap : min(v, cap)
    }
}

/// Identify Namespace fields the driver needs.
struct NVMeNamespaceIdentity: Equatable {
    var size: UInt64
    var lbaDataShift: Int
    var metadataBytes: Int
    var blockSize: Int { 1 << lbaDataShift }

    init(_ d: UnsafeRawPointer) {
        size = d.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
        let flbas = Int(d.load(fromByteOffset: 26, as: UInt8.self))
        let index = flbas & 0xF | (flbas >> 5 & 3) << 4
        let lbaf = d.loadUnaligned(fromByteOffset: 128 + 4 * min(index, 63), as: UInt32.self)
        metadataBytes = Int(lbaf & 0xFFFF)
        lbaDataShift = Int(lbaf >> 16 & 0xFF)
    }
}

/// PRP entries for a transfer of `bytes` at a contiguous IOVA range: the first entry may carry
/// an offset, every later one is the start of a controller page.
func prpPages(iova: UInt64, bytes: Int, pageSize: Int) -> [UInt64] {
    guard bytes > 0 else { return [] }
    let p = UInt64(pageSize)
    let firstPage = iova & ~(p - 1)
    let last = (iova + UInt64(bytes) - 1) & ~(p - 1)
    return [iova] + stride(from: firstPage + p, through: last, by: Int(p)).map { $0 }
}
