import Foundation
import XCTest
@testable import Exerciser

/// The config preflight: every option a group of rows needs, named with the number of planned
/// cases it takes away, before any boot.
final class PreflightTests: XCTestCase {
    static let full = """
    # Linux/x86 7.3.4 Kernel Configuration
    CONFIG_VFIO=y
    CONFIG_VFIO_PCI=m
    CONFIG_VFIO_IOMMU_TYPE1=m
    CONFIG_VFIO_CONTAINER=y
    CONFIG_INTEL_IOMMU=y
    CONFIG_IOMMUFD=y
    CONFIG_IOMMUFD_VFIO_CONTAINER=y
    CONFIG_VFIO_DEVICE_CDEV=y
    CONFIG_VFIO_MDEV=m
    CONFIG_MODULES=y
    CONFIG_HUGETLBFS=y
    CONFIG_TRANSPARENT_HUGEPAGE=y
    CONFIG_BLK_DEV_RAM=m
    CONFIG_EXT4_FS=m
    CONFIG_SECRETMEM=y
    CONFIG_X86_PMEM_LEGACY=m
    CONFIG_BLK_DEV_PMEM=m
    CONFIG_FS_DAX=y
    CONFIG_DEV_DAX=m
    CONFIG_DEV_DAX_PMEM=m
    CONFIG_PCI_P2PDMA=y
    CONFIG_DMA_SHARED_BUFFER=y
    """

    func plan() throws -> [PlannedCase] {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let m = try Matrix.load(dir.appendingPathComponent("configs/matrix.yaml").path)
        return Planner.plan(m, backends: nil, kinds: nil, bars: [])
    }

    func without(_ names: String...) -> KernelConfig {
        var text = Self.full
        for n in names { text = text.replacingOccurrences(of: "CONFIG_\(n)=", with: "# CONFIG_\(n) is not set #=") }
        return KernelConfig(text: text)
    }

    func testAFullConfigLacksNothing() throws {
        XCTAssertEqual(Preflight.check(KernelConfig(text: Self.full), plan: try plan()), [])
        XCTAssertEqual(KernelConfig(text: Self.full).version, KernelVersion(7, 3, 4))
    }

    func testIOMMUFDMissingNamesEveryIOMMUFDCase() throws {
        let p = try plan()
        let f = Preflight.check(without("IOMMUFD"), plan: p)
        XCTAssertEqual(f.map(\.group), ["iommufd"])
        let iommufdCases = p.filter { $0.backend.rawValue.hasPrefix("iommufd") }.count
        XCTAssertGreaterThan(iommufdCases, 50)
        XCTAssertEqual(f.first?.cases, iommufdCases)
        XCTAssertEqual(f.first?.line, "CONFIG_IOMMUFD is not set (iommufd): \(iommufdCases) cases will skip")
    }

    func testEachRequirementIsCheckedAndCountsOnlyItsCases() throws {
        let p = try plan()
        for r in Preflight.requirements {
            let f = Preflight.check(without(r.all[0]), plan: p)
            XCTAssertTrue(f.contains { $0.missing.contains(r.all[0]) }, "CONFIG_\(r.all[0]) unset went unnoticed")
            for finding in f { XCTAssertLessThan(finding.cases, p.count + 1) }
        }
        // The 'any' list: either file system will do, neither will not.
        XCTAssertEqual(Preflight.check(without("EXT4_FS"), plan: p).map(\.missing), [["EXT2_FS|EXT4_FS"]])
        XCTAssertEqual(Preflight.check(without("EXT4_FS"), plan: p).first?.cases, p.filter { $0.kind == .fsFile }.count)
    }

    func testAnOptionNewerThanTheKernelIsNotMissing() throws {
        let old = KernelConfig(text: Self.full.replacingOccurrences(of: "7.3.4", with: "6.1.176")
            .replacingOccurrences(of: "CONFIG_VFIO_CONTAINER=y\n", with: ""))
        XCTAssertEqual(Preflight.check(old, plan: try plan()).map(\.group), [])
        let new = KernelConfig(text: Self.full.replacingOccurrences(of: "CONFIG_VFIO_CONTAINER=y\n", with: ""))
        XCTAssertEqual(Preflight.check(new, plan: try plan()).map(\.group), ["type1"])
    }

    func testRequireFailsOnAMissingGroupAndAnUnknownName() throws {
        let f = Preflight.check(without("IOMMUFD", "FS_DAX"), plan: try plan())
        XCTAssertNoThrow(try Preflight.require(["mdev", "hugetlb"], findings: f, kernel: "k"))
        XCTAssertThrowsError(try Preflight.require(["iommufd"], findings: f, kernel: "k")) {
            XCTAssertTrue("\($0)".contains("CONFIG_IOMMUFD is not set"), "\($0)")
            XCTAssertFalse("\($0)".contains("FS_DAX"))
        }
        XCTAssertThrowsError(try Preflight.require(["iommu-fd"], findings: [], kernel: "k")) {
            XCTAssertTrue("\($0)".contains("no such group"))
        }
    }
}
