import Foundation
import VFIO

/// Proves a mapping moves the right bytes: the device reads the region's first page through
/// its IOVA into its buffer and writes that out to a scratch page at its own IOVA; for
/// writable mappings the device then writes a pattern into the region's last page.
struct DataCheck {
    let dma: DMADriver
    let scratch: MappedMemory
    let scratchIOVA: UInt64
    let seed: UInt8

    func pattern(_ count: Int, _ salt: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed) &+ Int(salt) &* 13) }
    }

    static func compare(_ p: UnsafeRawPointer, _ want: [UInt8]) -> Int? {
        for i in 0..<want.count where p.load(fromByteOffset: i, as: UInt8.self) != want[i] { return i }
        return nil
    }

    func run(region: Region, iova: UInt64, flags: DMAFlags) -> (checks: [Check], summary: String) {
        let page = min(dma.bufferSize, PageSize.base, Int(region.size))
        let lastOffset = Int(region.size) - max(page, PageSize.base)
        var checks: [Check] = []
        let canRead: Bool
        var expected: [UInt8]
        switch region.access {
        case .none(let why):
            return ([], "not checkable: \(why)")
        case .readWrite:
            canRead = true
            if let fill = region.initialFill {
                // Leave the page as the kernel pinned it (e.g. the zero page): it must read as `fill`.
                expected = [UInt8](repeating: fill, count: page)
            } else {
                expected = pattern(page, 1)
                expected.withUnsafeBytes { region.pointer.copyMemory(from: $0.baseAddress!, byteCount: page) }
            }
        case .readOnly:
            canRead = true
            expected = [UInt8](repeating: region.initialFill ?? 0, count: page)
        case .prefixOnly(let n):
            canRead = n >= UInt64(page)
            expected = pattern(page, 1)
            if canRead { expected.withUnsafeBytes { region.pointer.copyMemory(from: $0.baseAddress!, byteCount: page) } }
        }
        do {
            if flags.contains(.read) && canRead {
                memset(scratch.base, 0, page)
                try dma.read(from: iova, count: page)
                try dma.write(to: scratchIOVA, count: page)
                let bad = Self.compare(scratch.base, expected)
                checks.append(Check("data-read", bad == nil, bad.map {
                    String(format: "first page via IOVA 0x%llx: byte %d is 0x%02x, expected 0x%02x", iova, $0,
                           scratch.base.load(fromByteOffset: $0, as: UInt8.self), expected[$0])
                } ?? "first page via IOVA 0x\(String(iova, radix: 16)): \(page) bytes match"))
            }
            if flags.contains(.write) && region.access == .readWrite {
                let want = pattern(page, 2)
                want.withUnsafeBytes { scratch.base.copyMemory(from: $0.baseAddress!, byteCount: page) }
                let target = region.pointer + lastOffset
                memset(target, Int32(~want[0]), page)
                try dma.read(from: scratchIOVA, count: page)
                try dma.write(to: iova + UInt64(lastOffset), count: page)
                let bad = Self.compare(UnsafeRawPointer(target), want)
                checks.append(Check("data-write", bad == nil, bad.map {
                    String(format: "last page via IOVA 0x%llx: byte %d is 0x%02x, expected 0x%02x", iova + UInt64(lastOffset), $0,
                           target.load(fromByteOffset: $0, as: UInt8.self), want[$0])
                } ?? "last page via IOVA 0x\(String(iova + UInt64(lastOffset), radix: 16)): \(page) bytes landed"))
            }
        } catch {
            checks.append(Check("dma", false, "\(error)"))
        }
        if checks.isEmpty { return ([], "not checkable: no readable page for the device") }
        let ok = checks.allSatisfy(\.passed)
        return (checks, ok ? "ok (\(checks.map(\.name).joined(separator: ", ")))" : "mismatch")
    }
}
