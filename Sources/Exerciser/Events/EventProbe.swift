import Foundation
import VFIO

/// The NVMe engine seen as patterns: the device writes a pattern through a mapping (Read), or
/// says page by page whether the mapping holds one (Compare). The CPU side compares memory with
/// the same reference pages.
struct NVMeEventProbe {
    let engine: NVMeEngine
    let iova: UInt64
    let pages: Int
    /// Window pages that are not one repeated byte (a zero page must never pass for a pattern).
    let usable: [Int]
    /// A window page of all zeroes, for "does the device read zero".
    let zeroUnit: Int?

    init(engine: NVMeEngine, iova: UInt64, pages: Int) throws {
        self.engine = engine
        self.iova = iova
        self.pages = pages
        let unit = engine.unit
        func uniform(_ w: Int) -> UInt8? {
            let p = engine.refUnit(w)
            let b = p.load(as: UInt8.self)
            return (0..<unit).allSatisfy { p.load(fromByteOffset: $0, as: UInt8.self) == b } ? b : nil
        }
        var usable: [Int] = []
        var zero: Int?
        for w in 0..<engine.windowUnits {
            switch uniform(w) {
            case nil: usable.append(w)
            case 0?: if zero == nil { zero = w }
            default: break
            }
        }
        guard usable.count > Pattern.fill.offset else { throw EventStepError("the namespace window has \(usable.count) distinct pages: too few for event patterns") }
        self.usable = usable
        zeroUnit = zero
    }

    func unit(_ p: Pattern, page i: Int) -> Int { usable[(p.offset + i) % usable.count] }
    func ref(_ p: Pattern, page i: Int) -> UnsafeMutableRawPointer { engine.refUnit(unit(p, page: i)) }

    /// Commands covering pages first..<first+count whose LBAs run on, split at the transfer limit.
    func commands(_ op: NVMeIOOpcode, _ lbaOf: (Int) -> UInt64, pages list: Range<Int>) -> [(IO: NVMeController.IO, pages: Range<Int>)] {
        var out: [(NVMeController.IO, Range<Int>)] = []
        let ub = engine.unitBlocks
        let per = max(1, engine.controller.maxTransfer / engine.unit)
        var i = list.lowerBound
        while i < list.upperBound {
            var j = i + 1
            while j < list.upperBound && j - i < per && lbaOf(j) == lbaOf(j - 1) + UInt64(ub) { j += 1 }
            out.append((NVMeController.IO(opcode: op, lba: lbaOf(i), blocks: (j - i) * ub, iova: iova + UInt64(i * engine.unit)), i..<j))
            i = j
        }
        return out
    }

    func lba(_ p: Pattern?) -> (Int) -> UInt64 {
        { i in engine.lba(ofWindowUnit: p.map { unit($0, page: i) } ?? (zeroUnit ?? 0)) }
    }

    func deviceWrite(_ p: Pattern) throws {
        let list = commands(.read, lba(p), pages: 0..<pages)
        let s = try engine.controller.run(list.map(\.IO))
        if let k = s.firstIndex(where: { !$0.isSuccess }) {
            throw EventStepError("NVMe Read of LBA \(list[k].IO.lba) into pages \(list[k].pages) failed: \(s[k])")
        }
    }

    /// The device writes `p` into the listed pages only (one command per run of pages).
    func deviceWrite(_ p: Pattern, pages list: [Int]) throws {
        guard engine.unit == PageSize.base else { throw EventStepError("the NVMe's \(engine.unit)-byte blocks are larger than a 4 KiB bitmap page") }
        var runs: [Range<Int>] = []
        for i in list.sorted() {
            if let last = runs.last, last.upperBound == i { runs[runs.count - 1] = last.lowerBound..<(i + 1) } else { runs.append(i..<(i + 1)) }
        }
        for run in runs {
            let cmds = commands(.read, lba(p), pages: run)
            let s = try engine.controller.run(cmds.map(\.IO))
            if let k = s.firstIndex(where: { !$0.isSuccess }) {
                throw EventStepError("NVMe Read of LBA \(cmds[k].IO.lba) into pages \(cmds[k].pages) failed: \(s[k])")
            }
        }
    }

    /// Per page: does the device read `p` (nil: all zero; nil result when no zero page exists).
    func deviceReads(_ p: Pattern?) throws -> [Bool]? {
        if p == nil && zeroUnit == nil { return nil }
        var hits = [Bool](repeating: true, count: pages)
        let first = commands(.compare, lba(p), pages: 0..<pages)
        let s = try engine.controller.run(first.map(\.IO))
        // A failed run is split into single pages to say which.
        for (k, c) in first.enumerated() where !s[k].isSuccess {
            guard s[k] == .compareFailure else { throw EventStepError("NVMe Compare of pages \(c.pages) gave \(s[k])") }
            let single = c.pages.map { i in NVMeController.IO(opcode: .compare, lba: lba(p)(i), blocks: engine.unitBlocks, iova: iova + UInt64(i * engine.unit)) }
            let t = try engine.controller.run(single)
            for (n, i) in c.pages.enumerated() {
                guard t[n].isSuccess || t[n] == .compareFailure else { throw EventStepError("NVMe Compare of page \(i) gave \(t[n])") }
                hits[i] = t[n].isSuccess
            }
        }
        return hits
    }

    /// Per page of `at`: does it hold `p` (nil: all zero).
    func cpuReads(_ p: Pattern?, at: UnsafeMutableRawPointer) -> [Bool] {
        let u = engine.unit
        return (0..<pages).map { i in
            let m = at + i * u
            if let p { return memcmp(m, ref(p, page: i), u) == 0 }
            return (0..<u / 8).allSatisfy { m.load(fromByteOffset: $0 * 8, as: UInt64.self) == 0 }
        }
    }

    func cpuWrite(_ p: Pattern, at: UnsafeMutableRawPointer) {
        for i in 0..<pages { memcpy(at + i * engine.unit, ref(p, page: i), engine.unit) }
    }
}
