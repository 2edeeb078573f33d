import XCTest
import FuzzSupport
import Foundation
import SystemPackage
@testable import Exerciser
@testable import VFIO
import CVFIO

/// The kernel-facing layer without a kernel: ioctl numbers, errno names, the GET_INFO parser,
/// IOVA range arithmetic and kernel release parsing.
final class VFIOLayerTests: XCTestCase {

    // MARK: - ioctl request numbers

    /// _IO(';', 100 + n) = (0x3B << 8) | (100 + n), written out by hand from linux/vfio.h.
    func testIoctlRequestNumbers() {
        XCTAssertEqual(CVFIO_GET_API_VERSION, 0x3B64)          // + 0
        XCTAssertEqual(CVFIO_CHECK_EXTENSION, 0x3B65)          // + 1
        XCTAssertEqual(CVFIO_SET_IOMMU, 0x3B66)                // + 2
        XCTAssertEqual(CVFIO_GROUP_GET_STATUS, 0x3B67)         // + 3
        XCTAssertEqual(CVFIO_GROUP_SET_CONTAINER, 0x3B68)      // + 4
        XCTAssertEqual(CVFIO_GROUP_UNSET_CONTAINER, 0x3B69)    // + 5
        XCTAssertEqual(CVFIO_GROUP_GET_DEVICE_FD, 0x3B6A)      // + 6
        XCTAssertEqual(CVFIO_DEVICE_GET_INFO, 0x3B6B)          // + 7
        XCTAssertEqual(CVFIO_DEVICE_GET_REGION_INFO, 0x3B6C)   // + 8
        XCTAssertEqual(CVFIO_DEVICE_RESET, 0x3B6F)             // + 11
        XCTAssertEqual(CVFIO_IOMMU_GET_INFO, 0x3B70)           // + 12
        XCTAssertEqual(CVFIO_IOMMU_MAP_DMA, 0x3B71)            // + 13
        XCTAssertEqual(CVFIO_IOMMU_UNMAP_DMA, 0x3B72)          // + 14
    }

    /// mmap/memfd encodings the region backings rely on (linux/mman.h, linux/memfd.h).
    func testHugeFlagEncodings() {
        XCTAssertEqual(CVFIO_MAP_HUGETLB, 0x40000)
        XCTAssertEqual(CVFIO_MAP_HUGE_2MB, 21 << 26)
        XCTAssertEqual(CVFIO_MAP_HUGE_1GB, 30 << 26)
        XCTAssertEqual(CVFIO_MFD_HUGETLB, 0x4)
        XCTAssertEqual(CVFIO_MFD_HUGE_2MB, 21 << 26)
        XCTAssertEqual(CVFIO_MADV_HUGEPAGE, 14)
    }

    /// The hand-built buffers below assume this layout; pin it to the imported UAPI structs.
    func testUAPILayout() {
        XCTAssertEqual(MemoryLayout<vfio_iommu_type1_info>.size, 24)
        XCTAssertEqual(MemoryLayout<vfio_iommu_type1_info>.offset(of: \.flags), 4)
        XCTAssertEqual(MemoryLayout<vfio_iommu_type1_info>.offset(of: \.iova_pgsizes), 8)
        XCTAssertEqual(MemoryLayout<vfio_iommu_type1_info>.offset(of: \.cap_offset), 16)
        XCTAssertEqual(MemoryLayout<vfio_info_cap_header>.size, 8)
        XCTAssertEqual(MemoryLayout<vfio_iommu_type1_info_cap_iova_range>.size, 16)
        XCTAssertEqual(MemoryLayout<vfio_iova_range>.size, 16)
        XCTAssertEqual(MemoryLayout<vfio_iommu_type1_info_dma_avail>.size, 12)
        XCTAssertEqual(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1)
        XCTAssertEqual(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 3)
        XCTAssertEqual(VFIO_IOMMU_INFO_PGSIZES, 1)
        XCTAssertEqual(VFIO_IOMMU_INFO_CAPS, 2)
    }

    // MARK: - errno names

    func testErrnoSymbolRoundTrip() {
        let cases: [(Int32, String)] = [
            (EFAULT, "EFAULT"), (EINVAL, "EINVAL"), (EEXIST, "EEXIST"),
            (ENOMEM, "ENOMEM"), (ENOSPC, "ENOSPC"), (EOPNOTSUPP, "EOPNOTSUPP"),
        ]
        for (code, name) in cases {
            XCTAssertEqual(Errno(rawValue: code).symbol, name)
            XCTAssertEqual(Errno(symbol: name), Errno(rawValue: code), name)
            XCTAssertEqual(Errno(symbol: name)?.rawValue, code, name)
            XCTAssertEqual(Errno(symbol: Errno(rawValue: code).symbol), Errno(rawValue: code))
        }
        XCTAssertEqual(EFAULT, 14)
        XCTAssertEqual(EINVAL, 22)
        XCTAssertEqual(EEXIST, 17)
        XCTAssertEqual(ENOMEM, 12)
        XCTAssertEqual(ENOSPC, 28)
        XCTAssertEqual(EOPNOTSUPP, 95)
    }

    func testUnknownErrnoSymbols() {
        for s in ["EBOGUS", "", "efault", "EFAULT ", "ok", "E14", "14"] {
            XCTAssertNil(Errno(symbol: s), "\"\(s)\" is not an errno name")
        }
        // A number glibc has no name for still gets a symbol that does not look like a real one.
        XCTAssertEqual(Errno(rawValue: 4000).symbol, "E4000")
    }

    // MARK: - VFIO_IOMMU_GET_INFO parsing

    /// Little-endian byte buffer writer.
    struct Bytes {
        var b: [UInt8]
        init(count: Int) { b = [UInt8](repeating: 0, count: count) }
        mutating func u16(_ off: Int, _ v: UInt16) { for i in 0..<2 { b[off + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
        mutating func u32(_ off: Int, _ v: UInt32) { for i in 0..<4 { b[off + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
        mutating func u64(_ off: Int, _ v: UInt64) { for i in 0..<8 { b[off + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }

        /// struct vfio_iommu_type1_info at 0.
        mutating func info(flags: UInt32, pgsizes: UInt64, capOffset: UInt32) {
            u32(0, UInt32(b.count))
            u32(4, flags)
            u64(8, pgsizes)
            u32(16, capOffset)
            u32(20, 0)
        }

        /// struct vfio_info_cap_header at off.
        mutating func cap(_ off: Int, id: UInt16, version: UInt16 = 1, next: UInt32) {
            u16(off, id)
            u16(off + 2, version)
            u32(off + 4, next)
        }

        /// IOVA range cap at off: header, nr_iovas, reserved, ranges. Returns its end.
        @discardableResult
        mutating func iovaCap(_ off: Int, next: UInt32, nr: UInt32? = nil, _ ranges: [(UInt64, UInt64)]) -> Int {
            cap(off, id: 1, next: next)
            u32(off + 8, nr ?? UInt32(ranges.count))
            u32(off + 12, 0)
            for (i, r) in ranges.enumerated() {
                u64(off + 16 + 16 * i, r.0)
                u64(off + 24 + 16 * i, r.1)
            }
            return off + 16 + 16 * ranges.count
        }

        /// DMA avail cap at off: header, avail. Returns its end.
        @discardableResult
        mutating func availCap(_ off: Int, next: UInt32, _ avail: UInt32) -> Int {
            cap(off, id: 3, next: next)
            u32(off + 8, avail)
            return off + 12
        }
    }

    static let pgsizes: UInt64 = 0x4020_1000  // 4K | 2M | 1G
    static let flags: UInt32 = 0b11  // PGSIZES | CAPS
    static let q35Ranges: [(UInt64, UInt64)] = [(0, 0xfedf_ffff), (0xfef0_0000, 0x7f_ffff_ffff)]
    static var q35Expected: [IOVARange] { q35Ranges.map { IOVARange(start: $0.0, end: $0.1) } }

    /// info(24) → IOVA cap at 24 (16 + 2×16 = 48 bytes, ends at 72) → DMA avail cap at 72 (12 bytes) → end 84.
    static func wellFormed() -> [UInt8] {
        var b = Bytes(count: 88)
        b.info(flags: flags, pgsizes: pgsizes, capOffset: 24)
        let end = b.iovaCap(24, next: 72, q35Ranges)
        XCTAssertEqual(end, 72)
        b.availCap(72, next: 0, 65535)
        return b.b
    }

    func testParseWellFormedReply() {
        let info = IOMMUInfo.parse(Self.wellFormed())
        XCTAssertEqual(info.pageSizes, Self.pgsizes)
        XCTAssertEqual(info.smallestPage, 4096)
        XCTAssertEqual(info.iovaRanges, Self.q35Expected)
        XCTAssertEqual(info.dmaAvail, 65535)
    }

    func testParseCapsInEitherOrderAndUnknownCapsSkipped() {
        // info → DMA avail at 24 → unknown cap (id 2, migration) at 40 → IOVA range at 64.
        var b = Bytes(count: 24 + 16 + 24 + 32)
        b.info(flags: Self.flags, pgsizes: 0x20_0000, capOffset: 24)
        b.availCap(24, next: 40, 7)
        b.cap(40, id: 2, next: 64)
        b.u64(48, 0xdead_beef)  // body of the unknown cap, ignored
        b.iovaCap(64, next: 0, [(0x1000, 0xffff_ffff)])
        let info = IOMMUInfo.parse(b.b)
        XCTAssertEqual(info.pageSizes, 0x20_0000)
        XCTAssertEqual(info.smallestPage, 0x20_0000)
        XCTAssertEqual(info.dmaAvail, 7)
        XCTAssertEqual(info.iovaRanges, [IOVARange(start: 0x1000, end: 0xffff_ffff)])
    }

    func testParseHonoursFlags() {
        var b = Bytes(count: 88)
        b.info(flags: 0, pgsizes: Self.pgsizes, capOffset: 24)
        b.iovaCap(24, next: 72, Self.q35Ranges)
        b.availCap(72, next: 0, 1)
        // Neither PGSIZES nor CAPS: nothing is trusted.
        var info = IOMMUInfo.parse(b.b)
        XCTAssertEqual(info.pageSizes, 0)
        XCTAssertEqual(info.smallestPage, 4096, "no page sizes reported falls back to 4K")
        XCTAssertEqual(info.iovaRanges, [])
        XCTAssertNil(info.dmaAvail)
        // PGSIZES only.
        b.u32(4, 1)
        info = IOMMUInfo.parse(b.b)
        XCTAssertEqual(info.pageSizes, Self.pgsizes)
        XCTAssertEqual(info.iovaRanges, [])
        XCTAssertNil(info.dmaAvail)
        // CAPS only.
        b.u32(4, 2)
        info = IOMMUInfo.parse(b.b)
        XCTAssertEqual(info.pageSizes, 0)
        XCTAssertEqual(info.iovaRanges, Self.q35Expected)
        XCTAssertEqual(info.dmaAvail, 1)
        // CAPS with cap_offset 0: no chain.
        b.u32(4, 3)
        b.u32(16, 0)
        info = IOMMUInfo.parse(b.b)
        XCTAssertEqual(info.pageSizes, Self.pgsizes)
        XCTAssertEqual(info.iovaRanges, [])
        XCTAssertNil(info.dmaAvail)
    }

    func testSmallestPage() {
        func smallest(_ p: UInt64) -> UInt64 { IOMMUInfo(pageSizes: p, iovaRanges: [], dmaAvail: nil).smallestPage }
        XCTAssertEqual(smallest(0), 4096)
        XCTAssertEqual(smallest(0x4020_1000), 0x1000)
        XCTAssertEqual(smallest(0xffff_ffff_ffff_f000), 0x1000)
        XCTAssertEqual(smallest(0x4020_0000), 0x20_0000)
        XCTAssertEqual(smallest(1 << 63), 1 << 63)
        XCTAssertEqual(smallest(0x1_0000), 0x1_0000)
    }

    // Hostile replies: each must return, without trapping, what it could parse.

    func testParseCapOffsetBeyondBuffer() {
        for off: UInt32 in [84, 88, 4096, 0x7fff_ffff, 0xffff_fff8, 0xffff_ffff] {
            var b = Bytes(count: 88)
            b.info(flags: Self.flags, pgsizes: Self.pgsizes, capOffset: off)
            let info = IOMMUInfo.parse(b.b)
            XCTAssertEqual(info.pageSizes, Self.pgsizes, "cap_offset \(off)")
            XCTAssertEqual(info.iovaRanges, [], "cap_offset \(off)")
            XCTAssertNil(info.dmaAvail, "cap_offset \(off)")
        }
    }

    func testParseCapOffsetIntoFixedHeader() {
        // cap_offset pointing back into struct vfio_iommu_type1_info itself.
        for off: UInt32 in [1, 4, 8, 16, 20] {
            var b = Bytes(count: 88)
            b.info(flags: Self.flags, pgsizes: Self.pgsizes, capOffset: off)
            b.iovaCap(24, next: 72, Self.q35Ranges)
            b.availCap(72, next: 0, 5)
            let info = IOMMUInfo.parse(b.b)
            XCTAssertEqual(info.pageSizes, Self.pgsizes, "cap_offset \(off)")
            XCTAssertLessThanOrEqual(info.iovaRanges.count, 4096)
        }
    }

    func testParseBackwardNextDoesNotLoop() {
        // IOVA cap → DMA avail → back to the IOVA cap.
        var b = Bytes(count: 88)
        b.info(flags: Self.flags, pgsizes: Self.pgsizes, capOffset: 24)
        b.iovaCap(24, next: 72, Self.q35Ranges)
        b.availCap(72, next: 24, 9)
        var info = IOMMUInfo.parse(b.b)
        XCTAssertEqual(info.iovaRanges, Self.q35Expected, "each cap is read once, ranges not repeated")
        XCTAssertEqual(info.dmaAvail, 9)
        // A cap whose next points at itself.
        b.availCap(72, next: 72, 9)
        info = IOMMUInfo.parse(b.b)
        XCTAssertEqual(info.iovaRanges, Self.q35Expected)
        XCTAssertEqual(info.dmaAvail, 9)
        // The first cap pointing at itself.
        b.iovaCap(24, next: 24, Self.q35Ranges)
        info = IOMMUInfo.parse(b.b)
        XCTAssertEqual(info.iovaRanges, Self.q35Expected)
        XCTAssertNil(info.dmaAvail, "the chain stopped before the DMA avail cap")
        // Backward into the fixed header.
        b.iovaCap(24, next: 8, Self.q35Ranges)
        info = IOMMUInfo.parse(b.b)
        XCTAssertEqual(info.iovaRanges, Self.q35Expected)
        XCTAssertNil(info.dmaAvail)
    }

    func testParseLongForwardChainIsBounded() {
        // 200 unknown caps, each 8 bytes, each pointing to the next, then an IOVA cap.
        let n = 200
        var b = Bytes(count: 24 + 8 * n + 32)
        b.info(flags: Self.flags, pgsizes: Self.pgsizes, capOffset: 24)
        for i in 0..<n { b.cap(24 + 8 * i, id: 0x7777, next: UInt32(24 + 8 * (i + 1))) }
        b.iovaCap(24 + 8 * n, next: 0, [(0, 0xffff)])
        let info = IOMMUInfo.parse(b.b)
        XCTAssertEqual(info.pageSizes, Self.pgsizes)
        // Bounded walk: it may or may not reach the last cap, but it returns.
        XCTAssertTrue(info.iovaRanges.isEmpty || info.iovaRanges == [IOVARange(start: 0, end: 0xffff)])
    }

    func testParseNrIovasLargerThanBuffer() {
        for nr: UInt32 in [3, 1000, 4096, 4097, 0x7fff_ffff, 0xffff_ffff] {
            var b = Bytes(count: 72)  // room for exactly two ranges
            b.info(flags: Self.flags, pgsizes: Self.pgsizes, capOffset: 24)
            b.iovaCap(24, next: 0, nr: nr, Self.q35Ranges)
            let info = IOMMUInfo.parse(b.b)
            XCTAssertEqual(info.iovaRanges, Self.q35Expected, "nr_iovas \(nr): the two ranges the buffer holds")
            XCTAssertEqual(info.pageSizes, Self.pgsizes)
        }
        // nr_iovas overflowing into the next cap: the next cap still follows its header.
        var b = Bytes(count: 88)
        b.info(flags: Self.flags, pgsizes: Self.pgsizes, capOffset: 24)
        b.iovaCap(24, next: 72, nr: 0xffff_ffff, Self.q35Ranges)
        b.availCap(72, next: 0, 11)
        let info = IOMMUInfo.parse(b.b)
        XCTAssertEqual(Array(info.iovaRanges.prefix(2)), Self.q35Expected)
        XCTAssertEqual(info.dmaAvail, 11)
    }

    func testParseTruncatedBuffers() {
        let full = Self.wellFormed()
        let whole = IOMMUInfo.parse(full)
        for len in 0...full.count {
            let info = IOMMUInfo.parse(Array(full.prefix(len)))
            // Fixed part: page sizes need bytes 8..<16.
            XCTAssertEqual(info.pageSizes, len >= 16 ? Self.pgsizes : 0, "length \(len)")
            // Ranges: the first needs 24 + 16 + 16 = 56 bytes, the second 72.
            let ranges = len >= 72 ? 2 : len >= 56 ? 1 : 0
            XCTAssertEqual(info.iovaRanges, Array(whole.iovaRanges.prefix(ranges)), "length \(len)")
            // DMA avail needs its u32 at 80..<84.
            XCTAssertEqual(info.dmaAvail, len >= 84 ? 65535 : nil, "length \(len)")
        }
    }

    func testParseRandomGarbageTerminates() {
        var rng = FuzzRNG(seed: 0x5eed)
        for _ in 0..<2000 {
            let n = Int(rng.next() % 160)
            var bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if n >= 24 {
                // Make the walk likely to start: CAPS set and an in-buffer offset.
                bytes[4] |= 2
                bytes[16] = UInt8(rng.next() % UInt64(n)); bytes[17] = 0; bytes[18] = 0; bytes[19] = 0
            }
            let info = IOMMUInfo.parse(bytes)
            // At most 32 caps are walked, each reading ranges only from inside the buffer.
            XCTAssertLessThanOrEqual(info.iovaRanges.count, 32 * (n / 16 + 1))
        }
    }


    // MARK: - IOVARange.contains

    func testIOVARangeContainsEndInclusive() {
        let r = IOVARange(start: 0x1000, end: 0x1fff)
        XCTAssertTrue(r.contains(0x1000, size: 0x1000), "exactly the range")
        XCTAssertTrue(r.contains(0x1fff, size: 1), "the last byte (end is inclusive)")
        XCTAssertFalse(r.contains(0x1fff, size: 2), "one byte past end")
        XCTAssertFalse(r.contains(0x1000, size: 0x1001))
        XCTAssertFalse(r.contains(0x2000, size: 1), "end + 1")
        XCTAssertFalse(r.contains(0xfff, size: 1), "start - 1")
        XCTAssertFalse(r.contains(0xfff, size: 2), "straddles start")
        XCTAssertTrue(r.contains(0x1800, size: 0x800))
        XCTAssertFalse(r.contains(0x1800, size: 0x801))
        let one = IOVARange(start: 5, end: 5)
        XCTAssertTrue(one.contains(5, size: 1))
        XCTAssertFalse(one.contains(5, size: 2))
        XCTAssertFalse(one.contains(4, size: 1))
        XCTAssertFalse(one.contains(6, size: 1))
    }

    func testIOVARangeContainsSizeZero() {
        let r = IOVARange(start: 0x1000, end: 0x1fff)
        XCTAssertFalse(r.contains(0x1000, size: 0), "an empty range is never 'contained'")
        XCTAssertFalse(r.contains(0x1fff, size: 0))
        XCTAssertFalse(r.contains(0x5000, size: 0))
        XCTAssertFalse(IOVARange(start: 0, end: .max).contains(0, size: 0))
    }

    func testIOVARangeContainsNearUInt64Max() {
        let all = IOVARange(start: 0, end: .max)
        XCTAssertTrue(all.contains(0, size: .max), "bytes 0 ... max-1")
        XCTAssertTrue(all.contains(1, size: .max), "bytes 1 ... max")
        XCTAssertFalse(all.contains(2, size: .max), "would need byte max+1")
        XCTAssertTrue(all.contains(.max, size: 1))
        XCTAssertFalse(all.contains(.max, size: 2), "iova + size wraps")
        XCTAssertFalse(all.contains(.max - 0xfff, size: 0x2000), "iova + size wraps")
        XCTAssertTrue(all.contains(.max - 0xfff, size: 0x1000))
        let top = IOVARange(start: .max - 0xfff, end: .max)
        XCTAssertTrue(top.contains(.max - 0xfff, size: 0x1000))
        XCTAssertFalse(top.contains(.max - 0xfff, size: 0x1001))
        XCTAssertFalse(top.contains(.max - 0x1000, size: 0x1000), "starts one below")
        XCTAssertFalse(top.contains(0, size: .max))
        XCTAssertFalse(top.contains(.max, size: .max))
        let low = IOVARange(start: 0, end: 0xfff)
        XCTAssertFalse(low.contains(0x800, size: .max), "a huge size must not wrap into a yes")
        XCTAssertFalse(low.contains(.max, size: 1))
    }

    // MARK: - Kernel releases

    func testKernelVersionReleases() {
        XCTAssertEqual(KernelVersion(release: "6.1.0-50-amd64"), KernelVersion(6, 1, 0))
        XCTAssertEqual(KernelVersion(release: "6.12.117+deb13-amd64"), KernelVersion(6, 12, 117))
        XCTAssertEqual(KernelVersion(release: "7.3.4+deb13-amd64"), KernelVersion(7, 3, 4))
        XCTAssertEqual(KernelVersion(release: "6.5-rc1"), KernelVersion(6, 5, 0))
        XCTAssertEqual(KernelVersion(release: "5.18"), KernelVersion(5, 18, 0))
        XCTAssertNil(KernelVersion(release: ""))
        XCTAssertNil(KernelVersion(release: "abc"))
        XCTAssertNil(KernelVersion(release: "6"))
        // Fields come out separately (not merely an equal value).
        let v = KernelVersion(release: "6.12.117+deb13-amd64")
        XCTAssertEqual(v?.major, 6)
        XCTAssertEqual(v?.minor, 12)
        XCTAssertEqual(v?.patch, 117)
        XCTAssertEqual(v?.description, "6.12.117")
        // Ordering across the three test kernels.
        let a = KernelVersion(release: "6.1.0-50-amd64")!, b = KernelVersion(release: "6.12.117+deb13-amd64")!,
            c = KernelVersion(release: "7.3.4+deb13-amd64")!
        XCTAssertLessThan(a, b)
        XCTAssertLessThan(b, c)
    }
}
