import CVFIO
import Foundation
import VFIO

/// Proves a mapping moves the right bytes through the device, on its first, middle and last
/// page. Each device transfer reads one IOVA into the device's buffer or writes the buffer to
/// one IOVA; a read is observed by writing the buffer out again, so transfers come in pairs:
///  - read+write mappings: a ring. The CPU writes a pattern into page k, the device copies it
///    to page k+1 (mod n) and the CPU finds it there: read of k and write of k+1 in one pair.
///  - read-only mappings (or CPU-read-only memory): page k → buffer → scratch page.
///  - write-only mappings: scratch → buffer once, then buffer → each page.
/// Memory the CPU must not disturb (the zero page behind untouched anon) is read first.
///
/// With several engines (the device under test first, then helpers in the same container or
/// IOAS) the transfers of a step run at once, engine k on page k: a ring of three pages is two
/// rounds, not six transfers one after another (edu takes 100 ms of virtual time for each).
struct DataCheck {
    let engines: [DMADriver]
    /// One page per engine, mapped at `scratchIOVA` onwards.
    let scratch: MappedMemory
    let scratchIOVA: UInt64
    let seed: UInt8
    /// Test hook: send every region access to this IOVA instead (a deliberately wrong address).
    var wrongIOVA: UInt64? = nil

    init(engines: [DMADriver], scratch: MappedMemory, scratchIOVA: UInt64, seed: UInt8) {
        precondition(!engines.isEmpty)
        // No more engines than scratch pages: each writes reads back through its own.
        self.engines = Array(engines.prefix(max(1, scratch.length / PageSize.base)))
        self.scratch = scratch
        self.scratchIOVA = scratchIOVA
        self.seed = seed
    }

    struct Failure: Error { var detail: String }

    func pattern(_ count: Int, _ salt: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed) &+ salt &* 13 &+ 1) }
    }

    static func mismatch(_ p: UnsafeRawPointer, _ want: [UInt8]) -> String? {
        for i in 0..<want.count where p.load(fromByteOffset: i, as: UInt8.self) != want[i] {
            return String(format: "byte %d is 0x%02x, expected 0x%02x", i, p.load(fromByteOffset: i, as: UInt8.self), want[i])
        }
        return nil
    }

    /// Page offsets to check: first, middle, last (fewer for small or prefix-only regions).
    static func pages(size: UInt64, page: Int) -> [Int] {
        let n = Int(size) / page
        guard n > 0 else { return [] }
        var out: [Int] = []
        for p in [0, n / 2, n - 1] where !out.contains(p * page) { out.append(p * page) }
        return out
    }

    func iova(_ base: UInt64, _ off: Int) -> UInt64 { wrongIOVA ?? base + UInt64(off) }
    func scratchPage(_ e: Int) -> UnsafeMutableRawPointer { scratch.base + e * PageSize.base }
    func scratchAt(_ e: Int) -> UInt64 { scratchIOVA + UInt64(e * PageSize.base) }

    /// `list` in groups of at most one per engine.
    func chunks(_ list: [Int]) -> [[Int]] {
        stride(from: 0, to: list.count, by: engines.count).map { Array(list[$0..<min($0 + engines.count, list.count)]) }
    }

    /// Transfer `k` on engine `k`, all at once.
    func round(_ transfers: [Transfer]) throws {
        try dmaRound(transfers.enumerated().map { (engines[$0.offset], $0.element) })
    }

    func run(region: Region, iova base: UInt64, flags: DMAFlags) -> (checks: [Check], summary: String) {
        let len = min(engines[0].bufferSize, PageSize.base)
        var span = region.size
        let cpuWritable: Bool
        switch region.access {
        case .none(let why): return ([], "not checkable: \(why)")
        case .readWrite: cpuWritable = true
        case .readOnly: cpuWritable = false
        case .prefixOnly(let n): span = n; cpuWritable = true
        }
        let offs = Self.pages(size: span, page: PageSize.base)
        guard !offs.isEmpty else { return ([], "not checkable: no whole page") }
        let at = { (off: Int) in region.pointer + off }
        var checks: [Check] = []
        func record(_ name: String, _ body: () throws -> String) {
            do {
                checks.append(Check(name, true, try body()))
            } catch let f as Failure {
                checks.append(Check(name, false, f.detail))
            } catch {
                checks.append(Check(name, false, "\(error)"))
            }
        }
        let hex = { (v: Int) in String(v, radix: 16) }
        let where_ = offs.map { String(format: "0x%llx", iova(base, $0)) }.joined(separator: ",")
        let by = engines.count > 1 && offs.count > 1 ? " by \(min(engines.count, offs.count)) engines" : ""
        // Reads observed through the scratch pages; `expect(off)` is what page `off` holds.
        func readViaScratch(_ list: [Int], expect: (Int) -> [UInt8]) throws {
            for chunk in chunks(list) {
                let want = chunk.map(expect)
                for k in chunk.indices { memset(scratchPage(k), Int32(~want[k][0]), len) }
                try round(chunk.map { .read(from: iova(base, $0), count: len) })
                let hidden = chunk.indices.filter { engines[$0].visibleBuffer == nil }
                try dmaRound(hidden.map { (engines[$0], .write(to: scratchAt($0), count: len)) })
                for (k, off) in chunk.enumerated() {
                    let seen = engines[k].visibleBuffer.map { v in v.withUnsafeBytes { Self.mismatch($0.baseAddress!, want[k]) } }
                        ?? Self.mismatch(scratchPage(k), want[k])
                    if let m = seen {
                        throw Failure(detail: "page +0x\(hex(off)) read via IOVA 0x\(String(iova(base, off), radix: 16)): \(m)")
                    }
                }
            }
        }
        var ringStart = offs
        if flags.contains(.read), let fill = region.initialFill {
            // Read what the kernel pinned before the CPU writes anything there.
            let untouched = cpuWritable && flags.contains(.write) ? [offs[0]] : offs
            record("data-read") {
                try readViaScratch(untouched) { _ in [UInt8](repeating: fill, count: len) }
                return "\(untouched.count) page(s) read as 0x\(String(fill, radix: 16)) via \(where_)\(untouched.count > 1 ? by : "")"
            }
            if !(cpuWritable && flags.contains(.write)) { ringStart = [] }
        } else if flags.contains(.read) && !(cpuWritable && flags.contains(.write)) {
            record("data-read") {
                try readViaScratch(offs) { off in
                    let p = pattern(len, off / PageSize.base)
                    p.withUnsafeBytes { at(off).copyMemory(from: $0.baseAddress!, byteCount: len) }
                    return p
                }
                return "\(offs.count) page(s) read via \(where_)\(by)"
            }
            ringStart = []
        }
        if flags.contains(.read) && flags.contains(.write) && cpuWritable && !ringStart.isEmpty {
            record("data-ring") {
                let n = offs.count
                let p = (0..<n).map { pattern(len, 100 + $0) }
                let fail = { (k: Int) in
                    Failure(detail: "read of page +0x\(hex(offs[k])) or write of page +0x\(hex(offs[(k + 1) % n])) went wrong: ")
                }
                if engines.count >= n && n > 1 {
                    // Engine k reads page k, then writes it to page k+1: two rounds.
                    for k in 0..<n { p[k].withUnsafeBytes { at(offs[k]).copyMemory(from: $0.baseAddress!, byteCount: len) } }
                    try round(offs.map { .read(from: iova(base, $0), count: len) })
                    for k in 0..<n { memset(at(offs[(k + 1) % n]), Int32(~p[k][0]), len) }
                    try round((0..<n).map { .write(to: iova(base, offs[($0 + 1) % n]), count: len) })
                    for k in 0..<n {
                        if let m = Self.mismatch(at(offs[(k + 1) % n]), p[k]) { var f = fail(k); f.detail += m; throw f }
                    }
                } else {
                    for (k, off) in offs.enumerated() {
                        let next = offs[(k + 1) % n]
                        p[k].withUnsafeBytes { at(off).copyMemory(from: $0.baseAddress!, byteCount: len) }
                        if next != off { memset(at(next), Int32(~p[k][0]), len) }
                        try engines[0].read(from: iova(base, off), count: len)
                        try engines[0].write(to: iova(base, next), count: len)
                        if let m = Self.mismatch(at(next), p[k]) { var f = fail(k); f.detail += m; throw f }
                    }
                }
                return "\(n) page(s) read and written via \(where_)\(by)"
            }
        } else if flags.contains(.write) && !flags.contains(.read) && cpuWritable {
            record("data-write") {
                let p = pattern(len, 200)
                p.withUnsafeBytes { scratch.base.copyMemory(from: $0.baseAddress!, byteCount: len) }
                let loaded = min(engines.count, offs.count)
                try round((0..<loaded).map { _ in .read(from: scratchIOVA, count: len) })
                for chunk in chunks(offs) {
                    for off in chunk { memset(at(off), Int32(~p[0]), len) }
                    try round(chunk.map { .write(to: iova(base, $0), count: len) })
                    for off in chunk {
                        if let m = Self.mismatch(at(off), p) { throw Failure(detail: "page +0x\(hex(off)) written: \(m)") }
                    }
                }
                return "\(offs.count) page(s) written via \(where_)\(by)"
            }
        }
        if checks.isEmpty { return ([], "not checkable: mapping flags give the device nothing to do") }
        return (checks, checks.allSatisfy(\.passed) ? "ok (\(checks.map(\.name).joined(separator: ", ")))" : "mismatch")
    }
}

/// Peer-to-peer through the IOMMU: the device under test writes a word into the peer's BAR at
/// its IOVA, and reads one back. The peer is an edu too: its register 0x04 reads back the bitwise
/// inverse of the last value written, so the CPU sees through its own mmap of the peer's BAR
/// whether the device's write arrived, and what the device's read must bring back.
enum PeerCheck {
    static let register = 0x04

    /// `engines`: the device's first. With two, the write and the read run side by side (two
    /// rounds of edu's 100 ms instead of four); the second engine's words travel through its own
    /// scratch page. The device under test always does the peer write.
    static func run(engines: [DMADriver], scratch: MappedMemory?, scratchIOVA: UInt64, peer: BARMapping, iova: UInt64,
                    why: String) -> (checks: [Check], summary: String) {
        guard let dma = engines.first, let scratch else { return ([], "not checkable: \(why)") }
        guard let bar = peer.memory?.base else { return ([], "not checkable: the peer's BAR0 is not mapped") }
        cvfio_mmio_write32(bar, register, 0x0F0F_0F0F)
        guard cvfio_mmio_read32(bar, register) == ~UInt32(0x0F0F_0F0F) else {
            return ([], "not checkable: the peer's BAR0 does not answer like an edu's (register 0x04)")
        }
        let at = iova + UInt64(register)
        let hex = { (v: UInt32) in String(format: "0x%08x", v) }
        let p: UInt32 = 0x5EED_C0DE, q: UInt32 = 0x1234_5678
        let reader = engines.count > 1 && scratch.length >= 2 * PageSize.base ? engines[1] : nil
        let readPage = reader == nil ? 0 : PageSize.base
        var checks: [Check] = []
        // Device → peer: scratch → the device's buffer → the peer's register.
        // Peer → device: the register (the inverse of q) → a buffer → scratch.
        scratch.base.storeBytes(of: p, as: UInt32.self)
        cvfio_mmio_write32(bar, register, q)
        (scratch.base + readPage).storeBytes(of: 0, toByteOffset: readPage == 0 ? 4 : 0, as: UInt32.self)
        var writeError: Error?, readError: Error?
        if let reader {
            do {
                try dmaRound([(dma, .read(from: scratchIOVA, count: 4)), (reader, .read(from: at, count: 4))])
                try dmaRound([(dma, .write(to: at, count: 4)), (reader, .write(to: scratchIOVA + UInt64(readPage), count: 4))])
            } catch { writeError = error; readError = error }
        } else {
            do {
                // One engine: the read first, while the register still holds ~q.
                try dma.read(from: at, count: 4)
                try dma.write(to: scratchIOVA + 4, count: 4)
            } catch { readError = error }
            do {
                try dma.read(from: scratchIOVA, count: 4)
                try dma.write(to: at, count: 4)
            } catch { writeError = error }
        }
        if let e = writeError {
            checks.append(Check("data-p2p-write", false, "\(e)"))
        } else {
            let got = cvfio_mmio_read32(bar, register)
            checks.append(Check("data-p2p-write", got == ~p,
                                "device wrote \(hex(p)) to the peer's BAR0+0x4 at IOVA 0x\(String(at, radix: 16)); the register reads \(hex(got)), expected \(hex(~p))"))
        }
        if let e = readError {
            checks.append(Check("data-p2p-read", false, "\(e)"))
        } else {
            let got = (scratch.base + readPage).load(fromByteOffset: readPage == 0 ? 4 : 0, as: UInt32.self)
            checks.append(Check("data-p2p-read", got == ~q,
                                "\(reader == nil ? "device" : "helper \(reader!.name)") read \(hex(got)) from the peer's BAR0+0x4 at IOVA 0x\(String(at, radix: 16)), expected \(hex(~q))"))
        }
        return (checks, checks.allSatisfy(\.passed) ? "ok (peer-to-peer both ways)" : "mismatch")
    }
}
