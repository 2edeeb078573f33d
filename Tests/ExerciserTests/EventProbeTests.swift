import Foundation
import Glibc
import XCTest
import VFIO
@testable import Exerciser

/// The event probe on the NVMe driver against the fake controller: the IOMMU window points at a
/// different page than the CPU's (what a replaced mapping looks like), and each side's view must
/// be told apart page by page.
final class EventProbeTests: XCTestCase {
    let iova: UInt64 = 0x20_0000_0000

    func testDeviceAndCPUViewsOfADivergedMappingArePerPage() throws {
        let iommu = FakeNVMeIOMMU()
        var image = FakeNVMe.image(bytes: 4 << 20)
        for i in 0..<4096 { image[5 * 4096 + i] = 0 }  // one all-zero block: the zero reference
        let fake = FakeNVMe(iommu: iommu, namespaceBytes: 4 << 20, image: image)
        let c = try NVMeController(registers: fake, memory: iommu, commandTimeout: 0.5, readyTimeout: 0.05)
        let e = try NVMeEngine(controller: c, memory: iommu)
        let pinned = try MappedMemory.map(length: 8 * 4096, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS)
        let cpu = try MappedMemory.map(length: 8 * 4096, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS)
        iommu.map(iova, pinned.base, pinned.length)
        let probe = try NVMeEventProbe(engine: e, iova: iova, pages: 8)
        XCTAssertFalse(probe.usable.contains(5), "a uniform page never stands for a pattern")
        XCTAssertEqual(probe.zeroUnit, 5)

        probe.cpuWrite(.pre, at: pinned.base)
        XCTAssertEqual(try probe.deviceReads(.pre), Array(repeating: true, count: 8))
        XCTAssertEqual(try probe.deviceReads(.cpu), Array(repeating: false, count: 8))
        XCTAssertEqual(try probe.deviceReads(nil), Array(repeating: false, count: 8))

        try probe.deviceWrite(.device)
        XCTAssertEqual(probe.cpuReads(.device, at: pinned.base), Array(repeating: true, count: 8))
        XCTAssertEqual(probe.cpuReads(.device, at: cpu.base), Array(repeating: false, count: 8), "the CPU's page is another one")
        XCTAssertEqual(probe.cpuReads(nil, at: cpu.base), Array(repeating: true, count: 8))

        // One pinned page changed behind the device's back: only that page stops matching.
        pinned.base.storeBytes(of: 0xFF, toByteOffset: 3 * 4096 + 100, as: UInt8.self)
        XCTAssertEqual(try probe.deviceReads(.device), (0..<8).map { $0 != 3 })
        XCTAssertEqual(iommu.faults, [])
        XCTAssertTrue(Set(fake.ioOpcodes).isSubset(of: [0x02, 0x05]), "only Read and Compare")
        _ = e.close()
    }
}
