import CVFIO
import XCTest
@testable import Exerciser
@testable import VFIO

/// The end-of-run hygiene checks must notice what a run leaves behind. A set-up step that fails
/// fails the test: a check never exercised must not pass.
final class HygieneTests: XCTestCase {
    /// The first snapshot in a process leaves a timerfd open (seen when this suite runs first): once, not a leak.
    override class func setUp() { _ = HygieneSnapshot.take() }

    func testCleanRunPasses() throws {
        let before = HygieneSnapshot.take()
        let m = try MappedMemory.map(length: 65536, prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED | MAP_ANONYMOUS)
        m.unmap()
        let checks = before.compare(after: HygieneSnapshot.take())
        XCTAssertEqual(checks.map(\.name), ["fds", "maps", "locked-memory", "hugepages"])
        XCTAssertTrue(checks.allSatisfy(\.passed), "\(checks)")
    }

    func testLeakedFdIsFound() throws {
        let before = HygieneSnapshot.take()
        let fd = open("/dev/null", O_RDONLY)
        guard fd >= 0 else { return XCTFail("open(/dev/null): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let fds = before.compare(after: HygieneSnapshot.take()).first { $0.name == "fds" }!
        XCTAssertFalse(fds.passed)
        XCTAssertTrue(fds.detail.contains("/dev/null"), fds.detail)
    }

    func testLeftMappingIsFound() throws {
        let before = HygieneSnapshot.take()
        let fd = cvfio_memfd_create("vfio-exerciser-hygiene", 0)
        guard fd >= 0 else { return XCTFail("memfd_create: \(String(cString: strerror(errno)))") }
        guard ftruncate(fd, 65536) == 0 else { close(fd); return XCTFail("ftruncate: \(String(cString: strerror(errno)))") }
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
        // One page: fits any default RLIMIT_MEMLOCK (64 KiB at the least).
        let m = try MappedMemory.map(length: 4096, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS)
        defer { m.unmap() }
        guard mlock(m.base, m.length) == 0 else {
            let why = String(cString: strerror(errno))
            HostPrecondition.mlock.missing("mlock of one page: \(why)")
            // Without it, the accounting must be unchanged (the check is then only half tested).
            XCTAssertTrue(before.compare(after: HygieneSnapshot.take()).first { $0.name == "locked-memory" }!.passed)
            return
        }
        let locked = before.compare(after: HygieneSnapshot.take()).first { $0.name == "locked-memory" }!
        XCTAssertFalse(locked.passed, locked.detail)
        munlock(m.base, m.length)
    }
}
