import Foundation

/// Child processes where Foundation's Process cannot serve: in the initramfs guest it cannot
/// create its run-loop socket pair (a tinyconfig kernel without AF_UNIX) and hangs.
public enum Subprocess {
    /// Runs argv[0] with stdin from /dev/null, collecting stdout and stderr; kills it after `timeout` s.
    public static func run(_ argv: [String], timeout: Double) -> (status: Int32, stdout: Data, stderr: Data, error: String?) {
        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0 else { return (-1, Data(), Data(), "pipe: \(String(cString: strerror(errno)))") }
        guard pipe(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            return (-1, Data(), Data(), "pipe: \(String(cString: strerror(errno)))")
        }
        // Close-on-exec: the child gets only the dup2'ed copies on 1 and 2.
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for a in cargs { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, &cargs, environ)
        close(outPipe[1])
        close(errPipe[1])
        guard rc == 0 else {
            close(outPipe[0]); close(errPipe[0])
            return (-1, Data(), Data(), "cannot start \(argv[0]): \(String(cString: strerror(rc)))")
        }
        var out = Data(), err = Data()
        var fds = [pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0), pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0)]
        let deadline = monotonicNanos() + UInt64(timeout * 1e9)
        var timedOut = false
        var buf = [UInt8](repeating: 0, count: 65536)
        while fds.contains(where: { $0.fd >= 0 }) {
            let now = monotonicNanos()
            if now >= deadline { timedOut = true; break }
            let n = poll(&fds, nfds_t(fds.count), Int32(min((deadline - now) / 1_000_000, 1000)))
            if n < 0 && errno == EINTR { continue }
            if n < 0 { break }
            for i in fds.indices where fds[i].fd >= 0 && fds[i].revents != 0 {
                let got = buf.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, $0.count) }
                if got < 0 && errno == EINTR { continue }
                if got <= 0 {
                    close(fds[i].fd)
                    fds[i].fd = -1
                } else if i == 0 {
                    out.append(contentsOf: buf[0..<got])
                } else {
                    err.append(contentsOf: buf[0..<got])
                }
            }
        }
        for f in fds where f.fd >= 0 { close(f.fd) }
        if timedOut { kill(pid, SIGKILL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if timedOut { return (-1, out, err, String(format: "killed after %.0f s", timeout)) }
        // WIFEXITED / WEXITSTATUS / WTERMSIG by hand (macros Swift does not import).
        if status & 0x7f == 0 { return ((status >> 8) & 0xff, out, err, nil) }
        return (-1, out, err, "killed by signal \(status & 0x7f)")
    }
}
