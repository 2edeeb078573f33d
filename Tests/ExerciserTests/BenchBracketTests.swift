import CVFIO
import Foundation
import SystemPackage
import XCTest
@testable import Exerciser
@testable import VFIO

/// The CPU brackets on a real kernel: every ioctl the tool makes goes through cvfio_ioctl, which
/// brackets it while a bracket is set, and only then.
final class BenchBracketTests: XCTestCase {
    func testBracketsCountTheIoctlsOfTheirWindowOnly() throws {
        let fd = try FileDescriptor.open("/dev/null", .readWrite)
        defer { try? fd.close() }
        let tcgets: UInt = 0x5401  // a real syscall that fails with ENOTTY on /dev/null
        XCTAssertEqual(Sys.ioctl(fd, tcgets, nil), .failure(Errno(rawValue: ENOTTY)))
        let b = IoctlBrackets()
        b.calibrate()
        let t0 = b.start()
        for _ in 0..<20 { _ = Sys.ioctl(fd, tcgets, nil) }
        let t1 = b.stop()
        _ = Sys.ioctl(fd, tcgets, nil)
        let r = b.result
        XCTAssertEqual(r.calls, 20, "the ioctls before start() and after stop() are not counted")
        XCTAssertEqual(r.calibrations, 1)
        XCTAssertGreaterThan(r.emptyInside, 0, "the reads leave part of themselves inside a bracket")
        XCTAssertGreaterThan(r.emptyWhole, r.emptyInside, "and cost more in all")
        XCTAssertGreaterThan(r.insideNanos, 0)
        XCTAssertLessThanOrEqual(Double(r.insideNanos) / 1e3, (t1 - t0).total, "the brackets lie inside the thread's window")
        XCTAssertGreaterThan(r.kernelNanos, 0, "an ioctl that enters the kernel costs more than an empty bracket's inside")
    }

    func testAnEarlyReturnLeavesNoBracketBehind() throws {
        let fd = try FileDescriptor.open("/dev/null", .readWrite)
        defer { try? fd.close() }
        var b: IoctlBrackets? = IoctlBrackets()
        _ = b?.start()
        _ = Sys.ioctl(fd, 0x5401, nil)
        XCTAssertEqual(b?.result.calls, 1)
        b = nil  // dropped while running: deinit stops it (an ioctl now would write to freed memory otherwise)
        let c = IoctlBrackets()
        _ = Sys.ioctl(fd, 0x5401, nil)
        XCTAssertEqual(c.result.calls, 0)
    }
}
