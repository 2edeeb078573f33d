import Foundation
import VFIO

/// An NVMe controller as the session's data-check engine: the controller, a window of the
/// namespace read once into scratch memory (the reference), and a decoy page for --inject.
final class NVMeEngine {
    static let windowCap = 2 << 20

    let controller: NVMeController
    let reference: DMABuffer
    let decoy: DMABuffer
    /// Bytes per checked region page: a base page, or one block if blocks are larger.
    let unit: Int
    let unitBlocks: Int
    let windowUnits: Int
    /// How many reference pages differ from each other: a misplaced write between two equal
    /// pages cannot be seen.
    private(set) var distinctUnits = 0

    init(controller c: NVMeController, memory: DMAMemory, window: Int = NVMeEngine.windowCap) throws {
        controller = c
        let bs = c.namespace.blockSize
        unit = max(PageSize.base, bs)
        unitBlocks = unit / bs
        let nsUnits = c.namespace.size / UInt64(unitBlocks)
        windowUnits = Int(min(UInt64(max(window / unit, 1)), nsUnits))
        guard windowUnits > 0 else { throw DMAError(description: "nvme: namespace \(c.nsid) is smaller than one \(unit)-byte page") }
        reference = try memory.allocate(windowUnits * unit)
        decoy = try memory.allocate(unit)
        try loadReference()
    }

    var compareSupported: Bool { controller.identity.compareSupported }
    var blockSize: Int { controller.namespace.blockSize }
    func refUnit(_ w: Int) -> UnsafeMutableRawPointer { reference.pointer + w * unit }
    func lba(ofWindowUnit w: Int) -> UInt64 { UInt64(w * unitBlocks) }

    /// Commands of at most `maxTransfer` covering units first..<first+count of a run whose
    /// window units are consecutive.
    func split(_ count: Int) -> [(offset: Int, count: Int)] {
        let per = max(1, controller.maxTransfer / unit)
        return stride(from: 0, to: count, by: per).map { ($0, min(per, count - $0)) }
    }

    /// Reads the window into the reference buffer; a page still holding its poison means a
    /// Read that reported success moved nothing.
    private func loadReference() throws {
        for w in 0..<windowUnits { NVMeCheck.poison(refUnit(w), unit, index: w, salt: 0x5E) }
        let ios = split(windowUnits).map {
            NVMeController.IO(opcode: .read, lba: lba(ofWindowUnit: $0.offset), blocks: $0.count * unitBlocks,
                              iova: reference.iova + UInt64($0.offset * unit))
        }
        let statuses = try controller.run(ios)
        if let k = statuses.firstIndex(where: { !$0.isSuccess }) {
            throw DMAError(description: "nvme: reading the reference window: Read of LBA \(ios[k].lba)+\(ios[k].blocks) failed: \(statuses[k])")
        }
        var seen = Set<Int>()
        for w in 0..<windowUnits {
            if NVMeCheck.poisonIndex(refUnit(w), salt: 0x5E) == w {
                throw DMAError(description: "nvme: reference page \(w) (LBA \(lba(ofWindowUnit: w))) still holds its poison after a successful Read")
            }
            var h = Hasher()
            h.combine(bytes: UnsafeRawBufferPointer(start: refUnit(w), count: unit))
            seen.insert(h.finalize())
        }
        distinctUnits = seen.count
        poisonDecoy()
    }

    /// A wrong-IOVA command aimed here finds bytes no namespace page has.
    func poisonDecoy() { NVMeCheck.poison(decoy.pointer, unit, index: 0xDEC0, salt: 0xDE) }

    /// Deletes the I/O queues and disables the controller; call before unmapping its memory.
    func close() -> [String] { controller.shutdown() }
}

/// Proves every page of a mapping through an NVMe controller, without writing the namespace:
///  - device writes memory: each page gets a poison naming it, Read puts the window's LBAs
///    there, and each page must equal its reference page;
///  - device reads memory: the CPU copies the reference in, Compare against the same LBAs must
///    succeed, and with one byte flipped must report Compare Failure.
/// Region page i holds window page (start + i) mod window; `start` moves with the seed.
struct NVMeCheck {
    let engine: NVMeEngine
    let seed: Int
    /// Test hook (--inject wrong-iova): the first page of the first command goes here instead.
    var wrongIOVA: UInt64? = nil
    /// Test hook: the first command with two pages or more has its first two PRP pages swapped.
    var swapPRP = false

    struct Failure: Error { var detail: String }

    static let poisonMagic: UInt64 = 0x9015_0000_0000_0000

    /// A page that names itself at the start and end of every 512-byte sector (the smallest
    /// LBA): a sector the device did not write keeps a tag no namespace block holds. Tags, not a
    /// whole-page fill: under TCG a memset of 1 GiB costs a second.
    static func poison(_ p: UnsafeMutableRawPointer, _ n: Int, index: Int, salt: UInt8) {
        let tag = poisonMagic | UInt64(salt) << 40 | UInt64(index & 0xFF_FFFF_FFFF)
        var off = 0
        while off + 512 <= n {
            p.storeBytes(of: tag, toByteOffset: off, as: UInt64.self)
            p.storeBytes(of: tag, toByteOffset: off + 504, as: UInt64.self)
            off += 512
        }
        if off < n { memset(p + off, Int32(0xA5 ^ salt), n - off) }
    }

    /// The page index a poisoned page names, if it is one.
    static func poisonIndex(_ p: UnsafeRawPointer, salt: UInt8) -> Int? {
        let v = p.load(as: UInt64.self)
        guard v & 0xFFFF_FF00_0000_0000 == poisonMagic | UInt64(salt) << 40 else { return nil }
        return Int(v & 0xFF_FFFF_FFFF)
    }

    func run(region: Region, iova: UInt64, flags: DMAFlags) -> (checks: [Check], summary: String) {
        let r = runWithNotes(region: region, iova: iova, flags: flags)
        return (r.checks, r.summary)
    }

    /// As `run`, plus what could not be checked and why.
    func runWithNotes(region: Region, iova base: UInt64, flags: DMAFlags) -> (checks: [Check], summary: String, notes: [String]) {
        let unit = engine.unit
        var span = region.size
        let cpuWritable: Bool
        switch region.access {
        case .none(let why): return ([], "not checkable: \(why)", [])
        case .readWrite: cpuWritable = true
        case .readOnly: cpuWritable = false
        case .prefixOnly(let n): span = n; cpuWritable = true
        }
        let units = Int(span / UInt64(unit))
        guard units > 0 else { return ([], "not checkable: no whole \(unit)-byte page", []) }
        let bytes = units * unit
        let window = engine.windowUnits
        let start = (seed &* 97 &+ 13) % window
        let w = { (i: Int) in (start + i) % window }
        let hex = { (v: UInt64) in "0x" + String(v, radix: 16) }
        let range = "IOVA \(hex(base))-\(hex(base + UInt64(bytes) - 1))"
        let wraps = start + units > window
        let lbas = "LBAs from \(engine.lba(ofWindowUnit: start))" + (wraps ? ", wrapping at the \(window)-page window" : "")
        var notes: [String] = []
        if engine.distinctUnits < min(units, window) {
            notes.append("the reference window has \(engine.distinctUnits) distinct pages of \(window): a write misplaced between equal pages is invisible")
        }

        // Runs of region pages whose window pages are consecutive, split at the transfer limit.
        var commands: [(first: Int, count: Int)] = []
        var i = 0
        while i < units {
            let run = min(units - i, window - w(i))
            commands += engine.split(run).map { (i + $0.offset, $0.count) }
            i += run
        }
        func ios(_ op: NVMeIOOpcode, _ list: [(first: Int, count: Int)], lbaOf: (Int) -> UInt64 = { engine.lba(ofWindowUnit: w($0)) }) -> [NVMeController.IO] {
            list.map { NVMeController.IO(opcode: op, lba: lbaOf($0.first), blocks: $0.count * engine.unitBlocks, iova: base + UInt64($0.first * unit)) }
        }
        let controller = engine.controller
        controller.prpMutation = mutation(commands)
        defer { controller.prpMutation = nil }
        func issue(_ list: [NVMeController.IO]) throws -> [NVMeStatus] {
            if wrongIOVA == engine.decoy.iova { engine.poisonDecoy() }  // a Read may have filled it
            return try controller.run(list)
        }
        func describe(_ c: (first: Int, count: Int)) -> String {
            "pages +\(hex(UInt64(c.first * unit)))..+\(hex(UInt64((c.first + c.count) * unit - 1))) (IOVA \(hex(base + UInt64(c.first * unit))))"
        }

        var checks: [Check] = []
        var directions: [String] = []
        func record(_ name: String, _ body: () throws -> String) -> Bool {
            do {
                checks.append(Check(name, true, try body()))
                return true
            } catch let f as Failure {
                checks.append(Check(name, false, f.detail))
            } catch {
                checks.append(Check(name, false, "\(error)"))
            }
            return false
        }

        // Device → memory.
        if flags.contains(.write) && cpuWritable {
            let salt = UInt8(truncatingIfNeeded: seed) | 1
            if record("data-nvme-read", {
                for i in 0..<units { Self.poison(region.pointer + i * unit, unit, index: i, salt: salt) }
                let list = ios(.read, commands)
                let s = try issue(list)
                if let k = s.firstIndex(where: { !$0.isSuccess }) {
                    throw Failure(detail: "Read of LBA \(list[k].lba)+\(list[k].blocks) into \(describe(commands[k])) failed: \(s[k])")
                }
                var bad: [Int] = []
                for i in 0..<units where memcmp(region.pointer + i * unit, engine.refUnit(w(i)), unit) != 0 { bad.append(i) }
                if let first = bad.first {
                    let p = region.pointer + first * unit, ref = engine.refUnit(w(first))
                    var detail = "\(bad.count) of \(units) pages differ from the namespace; first: page +\(hex(UInt64(first * unit))) at IOVA \(hex(base + UInt64(first * unit)))"
                    if let named = Self.poisonIndex(p, salt: salt) {
                        detail += named == first ? " still holds its poison: no device write arrived"
                                                 : " holds the poison of page \(named)"
                    } else if let b = (0..<unit).first(where: { p.load(fromByteOffset: $0, as: UInt8.self) != ref.load(fromByteOffset: $0, as: UInt8.self) }) {
                        detail += String(format: ": byte %d is 0x%02x, expected 0x%02x", b, p.load(fromByteOffset: b, as: UInt8.self), ref.load(fromByteOffset: b, as: UInt8.self))
                    }
                    throw Failure(detail: detail)
                }
                return "\(bytes) bytes in \(list.count) Read command(s) into \(range), every page equal to \(lbas)"
            }) { directions.append("device writes") }
        } else if flags.contains(.write) {
            notes.append("device writes: not checked, the CPU cannot write this memory to poison it")
        }

        // Memory → device.
        if flags.contains(.read) {
            /// Memory the CPU may not write that holds `fill`: Compare each page with a reference
            /// page that is all `fill`, if the window has one.
            func checkFilled(_ fill: UInt8) {
                let isFill = { (w: Int) in
                    let p = engine.refUnit(w)
                    return (0..<unit).allSatisfy { p.load(fromByteOffset: $0, as: UInt8.self) == fill }
                }
                guard let same = (0..<window).first(where: isFill) else {
                    notes.append(String(format: "device reads: the memory holds 0x%02x and no page of the namespace window does: not checkable against the namespace", fill))
                    return
                }
                let list = (0..<units).map { NVMeController.IO(opcode: .compare, lba: engine.lba(ofWindowUnit: same), blocks: engine.unitBlocks, iova: base + UInt64($0 * unit)) }
                let ok = record("data-nvme-compare") {
                    controller.prpMutation = mutation(list.indices.map { ($0, 1) })
                    let s = try issue(list)
                    if let k = s.firstIndex(where: { !$0.isSuccess }) {
                        throw Failure(detail: String(format: "%d of %d pages differ from 0x%02x; first: page +%@ (IOVA %@): %@", s.filter { !$0.isSuccess }.count, units, fill,
                                                     hex(UInt64(k * unit)), hex(base + UInt64(k * unit)), "\(s[k])"))
                    }
                    return String(format: "%d bytes in %d Compare command(s) from %@ equal to LBA %llu, a page of 0x%02x", bytes, list.count, range, engine.lba(ofWindowUnit: same), fill)
                }
                let other = (0..<window).first { !isFill($0) }
                let proven = record("data-nvme-compare-fails") {
                    guard let other else { throw Failure(detail: "every window page is 0x\(String(fill, radix: 16)): nothing to fail against") }
                    controller.prpMutation = nil
                    let s = try issue([NVMeController.IO(opcode: .compare, lba: engine.lba(ofWindowUnit: other), blocks: engine.unitBlocks, iova: base)])[0]
                    guard s == .compareFailure else { throw Failure(detail: "page +0x0 against LBA \(engine.lba(ofWindowUnit: other)) reported \(s), expected \(NVMeStatus.compareFailure)") }
                    return "page +0x0 against a different page gave \(s)"
                }
                if ok && proven { directions.append("device reads") }
            }
            // Pages the device may only read that hold a known fill (the zero page behind untouched
            // anon) must not be written by the CPU: the device would still see the old page.
            let cpuMayFill = cpuWritable && (region.initialFill == nil || flags.contains(.write))
            if !engine.compareSupported {
                notes.append("device reads: not checked, the controller lacks Compare (ONCS bit 0)")
            } else if cpuMayFill {
                let list = ios(.compare, commands)
                // After a Read that passed, every page already equals its reference page.
                let loaded = directions.contains("device writes")
                let ok = record("data-nvme-compare") {
                    if !loaded { for i in 0..<units { memcpy(region.pointer + i * unit, engine.refUnit(w(i)), unit) } }
                    let s = try issue(list)
                    if let k = s.firstIndex(where: { !$0.isSuccess }) {
                        let n = s.filter { !$0.isSuccess }.count
                        throw Failure(detail: "\(n) of \(list.count) Compare command(s) failed; first: \(describe(commands[k])) against LBA \(list[k].lba)+\(list[k].blocks): \(s[k])")
                    }
                    return "\(bytes) bytes in \(list.count) Compare command(s) from \(range) equal to \(lbas)"
                }
                let proven = record("data-nvme-compare-fails") {
                    let page = seed % units
                    let k = commands.firstIndex { page >= $0.first && page < $0.first + $0.count }!
                    let at = region.pointer + page * unit + (seed &* 13) % unit
                    let old = at.load(as: UInt8.self)
                    at.storeBytes(of: old ^ 0x5A, as: UInt8.self)
                    defer { at.storeBytes(of: old, as: UInt8.self) }
                    controller.prpMutation = nil
                    let s = try issue([list[k]])[0]
                    guard s == .compareFailure else {
                        throw Failure(detail: "with page +\(hex(UInt64(page * unit))) changed by one byte, Compare reported \(s), expected \(NVMeStatus.compareFailure)")
                    }
                    return "one flipped byte in page +\(hex(UInt64(page * unit))) gave \(s)"
                }
                if ok && proven { directions.append("device reads") }
            } else if let fill = region.initialFill {
                checkFilled(fill)
            } else {
                notes.append("device reads: not checkable against the namespace (read-only memory of unknown content)")
            }

        }

        if checks.isEmpty {
            let why = notes.isEmpty ? ["mapping flags give the device nothing to do"] : notes
            return ([], "not checkable: " + why.joined(separator: "; "), [])
        }
        guard checks.allSatisfy(\.passed) else {
            return (checks, "mismatch (nvme: \(checks.filter { !$0.passed }.map(\.name).joined(separator: ", ")))", notes)
        }
        let how = directions.count == 2 ? "both directions" : directions.joined()
        return (checks, "ok (nvme, \(bytes) bytes, \(how))", notes)
    }

    /// The PRP hook for the commands of one pass, or nil when no mutation is asked for.
    func mutation(_ commands: [(first: Int, count: Int)]) -> ((Int, inout [UInt64]) -> Void)? {
        if let wrong = wrongIOVA {
            return { index, pages in if index == 0 { pages[0] = wrong } }
        }
        if swapPRP, let target = commands.firstIndex(where: { $0.count >= 2 }) {
            return { index, pages in if index == target { pages.swapAt(0, 1) } }
        }
        return nil
    }
}
