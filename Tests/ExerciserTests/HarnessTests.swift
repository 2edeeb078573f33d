import XCTest
@testable import Exerciser

/// The host side of the VM harness that needs no guest: reading the console.
final class HarnessTests: XCTestCase {
    static let warn = "WARNING: drivers/iommu/generic_pt/fmt/../iommu_pt.h:933 at vtdss_map_range+0x2ec/0x340, CPU#0: vfio-exerciser/257"

    func testConsoleIncidentsFindSplatsAndPanics() {
        let console = """
        [    1.0] Run /init as init process
        [   57.3] \(Self.warn)
        [   60.0] BUG: kernel NULL pointer dereference, address: 0000000000000000
        ok line
        [   61.0] Kernel panic - not syncing: Fatal exception
        """
        XCTAssertEqual(VMHarness.consoleIncidents(console), [
            "console: [   57.3] \(Self.warn)",
            "console: [   60.0] BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "console: [   61.0] Kernel panic - not syncing: Fatal exception",
        ])
    }

    func testAWarnACaseClaimedIsNotARunIncident() {
        // The console interleaves the guest's progress with the kernel's lines; the same splat
        // then appears more than once, always ending in the same text.
        let incidents = VMHarness.consoleIncidents("""
        \u{1b}[K[124/265] iommufd-compat-type1/size-zero@device: EINVAL PASS[   57.337656] \(Self.warn)
        iommufd-compat-type1/flags-none@device: check kernel-log: FAIL \(Self.warn)
        \(Self.warn)
        WARNING: mm/gup.c:100 at something_else+0x1/0x2, CPU#0: vfio-exerciser/300
        BUG: Bad page state in process vfio-exerciser
        """)
        XCTAssertEqual(incidents.count, 5)
        let left = VMHarness.unattributed(incidents, caseLog: [Self.warn, "Modules linked in: vfio_exerciser_test(O)", "Call Trace:"])
        XCTAssertEqual(left, [
            "console: WARNING: mm/gup.c:100 at something_else+0x1/0x2, CPU#0: vfio-exerciser/300",
            "console: BUG: Bad page state in process vfio-exerciser",
        ], "an unclaimed WARN and any BUG stay incidents")
        XCTAssertEqual(VMHarness.unattributed(incidents, caseLog: []), incidents, "nothing claimed: every splat is an incident")
    }

    func testAnOopsedGuestIsEndedAfterTheLimitWithoutProgress() {
        var w = StallWatch(start: 0, limit: 30)
        w.progressed(at: 20)
        XCTAssertFalse(w.shouldEnd(at: 200), "no oops: only the timeout ends a guest")
        w.oopsed(at: 21)
        XCTAssertFalse(w.shouldEnd(at: 50.9))
        XCTAssertTrue(w.shouldEnd(at: 51), "30 s after the oops that followed the last result")
        w.progressed(at: 45)
        XCTAssertFalse(w.shouldEnd(at: 74), "a result after the oops restarts the clock")
        XCTAssertTrue(w.shouldEnd(at: 75))
        w.oopsed(at: 70)
        XCTAssertEqual(w.oopsAt, 21, "the first oops counts")
        var late = StallWatch(start: 0, limit: 30)
        late.progressed(at: 10)
        late.oopsed(at: 35)
        XCTAssertFalse(late.shouldEnd(at: 60), "an oops long after the last result still gets its 30 s")
        XCTAssertTrue(late.shouldEnd(at: 65))
    }

    func testOopsLines() {
        XCTAssertNil(VMHarness.oopsLine("[ 1.0] Run /init\n[ 5.0] WARNING: CPU: 0 PID: 1 at mm/gup.c:100 foo\n"), "a WARN is no oops")
        XCTAssertEqual(VMHarness.oopsLine("ok\r\n[ 9.1] BUG: kernel NULL pointer dereference, address: 0000000000000000\r\n[ 9.1] Oops: 0002 [#1] PREEMPT SMP NOPTI\r\n"),
                       "[ 9.1] BUG: kernel NULL pointer dereference, address: 0000000000000000")
        XCTAssertNotNil(VMHarness.oopsLine("[ 3.0] Oops: general protection fault, probably for non-canonical address"))
        XCTAssertNotNil(VMHarness.oopsLine("[ 3.0] Kernel panic - not syncing: sysrq triggered crash"))
    }
}
