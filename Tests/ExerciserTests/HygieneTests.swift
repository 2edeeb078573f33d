import CVFIO
import XCTest
@testable import Exerciser
@testable import VFIO

/// The end-of-run hygiene checks must notice what a run leaves behind.
final class HygieneTests: XCTestCase {
    func testCleanRunPasses() {
        let before = HygieneSnapshot.take()
        let m = try? MappedMemory.map(length: 65536, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED | MAP_ANONYMOUS)
        m?.unmap()
        let checks = before.compare(after: HygieneSnapshot.take())
        XCTAssertEqual(checks.map(\.name), ["fds", "maps", "locked-memory", "hugepages"])
        XCTAssertTrue(checks.allSatisfy(\.passed), "\(checks)")
    }

    func testLeakedFdIsFound() throws {
        let before = HygieneSnapshot.take()
        let fd = open("/dev/null", O_RDONLY)
        defer { close(fd) }
        let fds = before.compare(after: HygieneSnapshot.take()).first { $0.name == "fds" }!
        XCTAssertFalse(fds.passed)
        XCTAssertTrue(fds.detail.contains("/dev/null"), fds.detail)
    }

    func testLeftMappingIsFound() throws {
        let before = HygieneSnapshot.take()
        let fd = cvfio_memfd_create("vfio-exerciser-hygiene", 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        ftruncate(fd, 65536)
        let m = try MappedMemory.map(length: 65536, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED, fd: fd)
        close(fd)
        let maps = before.compare(after: HygieneSnapshot.take()).first { $0.name == "maps" }!
        XCTAssertFalse(maps.passed)
        XCTAssertTrue(maps.detail.contains("memfd:vfio-exerciser-hygiene"), maps.detail)
        m.unmap()
        XCTAssertTrue(before.compare(after: HygieneSnapshot.take()).first { $0.name == "maps" }!.passed)
    }

    func testLockedMemoryIsFound() throws {
        let before = HygieneSnapshot.take()
        let m = try MappedMemory.map(length: 65536, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS)
        defer { m.unmap() }
        guard mlock(m.base, m.length) == 0 else {
            // Without room under RLIMIT_MEMLOCK mlock fails; the accounting must then be unchanged.
            XCTAssertTrue(before.compare(after: HygieneSnapshot.take()).first { $0.name == "locked-memory" }!.passed)
            return
        }
        let locked = before.compare(after: HygieneSnapshot.take()).first { $0.name == "locked-memory" }!
        XCTAssertFalse(locked.passed, locked.detail)
        munlock(m.base, m.length)
    }
}
