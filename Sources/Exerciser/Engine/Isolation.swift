import CVFIO
import Foundation
import VFIO

/// Runs a case in a forked child. The child inherits the container, device and BAR mappings,
/// maps only inside an IOVA window the parent reserved, and sends its record back as JSON over
/// a pipe. A child that dies or hangs loses its case only: the parent reports the signal or the
/// timeout and unmaps whatever the child left in the window.
enum Isolation {
    static func threads() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 1
    }

    /// Room for every mapping a case makes (edges use up to three), each aligned for superpages.
    static func window(for c: PlannedCase, bars: [BARMapping]) -> UInt64 {
        let size = c.kind.needsDevice ? (bars.map(\.region.size).max() ?? 0) + (64 << 10) : max(c.size, 64 << 10)
        return IOVAAllocator.alignment(for: size) * 4
    }

    static func run(_ c: PlannedCase, index: Int, session: Session, timeout: Double) -> CaseRecord {
        // fork() of a multi-threaded Swift process could deadlock the child on a runtime lock.
        guard threads() == 1 else {
            var r = Runner(session: session, planned: c, index: index).run()
            r.properties["isolation"] = "none: \(threads()) threads"
            return r
        }
        let size = window(for: c, bars: session.bars)
        guard let base = session.iova.allocate(size) else {
            return Runner.record(c, iova: 0, outcome: .skip("no IOVA window of \(formatSize(size)) left"))
        }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return Runner(session: session, planned: c, index: index).run() }
        let pid = cvfio_fork()
        if pid == 0 {
            cvfio_binding_disarm()  // a signal to the child must not unbind the parent's device
            close(fds[0])
            session.iova.next = base
            let rec = Runner(session: session, planned: c, index: index).run()
            let data = (try? JSONEncoder().encode(rec)) ?? Data()
            var off = 0
            data.withUnsafeBytes { raw in
                while off < raw.count {
                    let n = write(fds[1], raw.baseAddress! + off, raw.count - off)
                    if n <= 0 { if errno == EINTR { continue }; break }
                    off += n
                }
            }
            _exit(0)  // no deinit, no atexit: the parent owns every shared object
        }
        close(fds[1])
        defer { close(fds[0]) }
        if pid < 0 { return Runner(session: session, planned: c, index: index).run() }

        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        let deadline = monotonicNanos() + UInt64(timeout * 1e9)
        var timedOut = false
        while true {
            let now = monotonicNanos()
            if now >= deadline { timedOut = true; break }
            var p = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(min(1000, (deadline - now) / 1_000_000 + 1)))
            if r < 0 && errno == EINTR { continue }
            if r == 0 { continue }
            let n = buf.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            data += buf[0..<n]
        }
        var status: Int32 = 0
        if timedOut { kill(pid, SIGKILL) }
        // A child stuck in an uninterruptible ioctl cannot be reaped: give it 5 s, then go on.
        // The pidfd wakes the moment the child is gone; the 10 ms polls below are the fallback
        // (they cost 10 ms a case when the pipe closes before the child is a zombie).
        let pidfd = cvfio_pidfd_open(pid)
        if pidfd >= 0 {
            var p = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            while poll(&p, 1, 5000) < 0 && errno == EINTR {}
            close(pidfd)
        }
        var reaped = false
        for _ in 0..<500 {
            let w = waitpid(pid, &status, WNOHANG)
            if w == pid { reaped = true; cvfio_child_reaped(); break }
            if w < 0 && errno != EINTR { break }
            usleep(10_000)
        }
        if !timedOut, reaped, (status & 0x7f) == 0, let rec = try? JSONDecoder().decode(CaseRecord.self, from: Data(data)) {
            return rec
        }
        let why: String
        if timedOut {
            why = String(format: "timed out after %.0f s%@", timeout, reaped ? "" : " (child unkillable: stuck in the kernel)")
        } else if reaped && (status & 0x7f) != 0 {
            let sig = status & 0x7f
            why = "crashed: killed by SIG\(String(cString: cvfio_signal_name(sig)))"
        } else {
            why = "child exited (status \(status >> 8)) without a record"
        }
        var rec = Runner.record(c, iova: base, outcome: .lost(why))
        rec.cleanupOK = false
        // Whatever the child mapped lies in its window: take it out so the next case starts clean.
        switch session.space.unmap(iova: base, size: size) {
        case .success(let n): rec.properties["cleanup_unmapped"] = "\(n) bytes from the case's IOVA window"
        case .failure(let e): rec.checks.append(Check("window-cleanup", false, "UNMAP_DMA of the case's window: \(e.symbol)"))
        }
        // A BAR fault may have come from memory decoding being off: turn it back on.
        try? session.device?.enableBusMaster()
        return rec
    }
}
