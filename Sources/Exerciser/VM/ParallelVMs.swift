import Foundation

/// What one kernel's guest came to, for the combined summary of `vm` on several kernels.
public struct KernelRun: Sendable, Equatable {
    public enum Result: Sendable, Equatable {
        /// The guest ran and its results were judged.
        case report(RunReport, seconds: Double, outDir: String)
        /// The kernel could not be run at all (fetch, build or set-up failed): the one line saying why.
        case error(String)
    }
    public var kernel: String
    public var result: Result
    public init(kernel: String, result: Result) {
        self.kernel = kernel
        self.result = result
    }

    /// kselftest's codes for this kernel; 2 when it could not run.
    public var exitCode: Int32 {
        switch result {
        case .report(let r, _, _): return r.exitCode
        case .error: return 2
        }
    }

    /// One summary line: verdict counts, incidents (a killed guest, a panic), time, where the reports are.
    public var line: String {
        switch result {
        case .error(let why):
            return "\(kernel): not run: \(why)"
        case let .report(r, seconds, dir):
            var s = String(format: "%@: %@ — %d passed, %d failed, %d skipped, %d xfail; QEMU start to verdict %.1f s; reports in %@",
                           kernel, r.header.kernelRelease, r.count(.pass), r.count(.fail), r.count(.skip), r.count(.xfail), seconds, dir)
            if let first = r.incidents.first {
                s += "; \(r.incidents.count) incident\(r.incidents.count == 1 ? "" : "s"): \(first)"
            }
            return s
        }
    }
}

public enum VMSummary {
    /// The exit code of `vm` over several kernels: 1 when any kernel failed (a case, an incident,
    /// a killed guest), else 2 when one could not run, else 4 when every kernel skipped
    /// everything, else 0. No kernel at all is a failure, never a pass.
    public static func exitCode(_ runs: [KernelRun]) -> Int32 {
        let codes = runs.map(\.exitCode)
        if codes.isEmpty || codes.contains(1) { return 1 }
        if codes.contains(2) { return 2 }
        if codes.allSatisfy({ $0 == 4 }) { return 4 }
        return codes.allSatisfy { $0 == 0 || $0 == 4 } ? 0 : 1
    }

    /// One line per kernel in the order given, then the total when there is more than one.
    public static func lines(_ runs: [KernelRun], wallSeconds: Double? = nil) -> [String] {
        var out = runs.map(\.line)
        if runs.count > 1 {
            let failed = runs.filter { $0.exitCode == 1 }.map(\.kernel)
            let notRun = runs.filter { $0.exitCode == 2 }.map(\.kernel)
            var t = "\(runs.count) kernels: "
            t += failed.isEmpty && notRun.isEmpty ? "none failed" : ""
            t += failed.isEmpty ? "" : "failed: " + failed.joined(separator: ", ")
            t += notRun.isEmpty ? "" : (failed.isEmpty ? "" : "; ") + "not run: " + notRun.joined(separator: ", ")
            if let w = wallSeconds { t += String(format: "; %.0f s in all", w) }
            t += "; exit \(exitCode(runs))"
            out.append(t)
        }
        return out
    }
}

/// Runs `body` for each index in 0..<count on up to `jobs` threads at once; results in index order.
public enum JobPool {
    public static func run<R: Sendable>(count: Int, jobs: Int, _ body: @escaping @Sendable (Int) -> R) -> [R] {
        let slots = ResultSlots<R>(count)
        let gate = DispatchSemaphore(value: max(1, jobs))
        let group = DispatchGroup()
        for i in 0..<count {
            gate.wait()
            group.enter()
            // Own threads, not the dispatch pool: each job blocks for minutes waiting on QEMU.
            let t = Thread {
                slots.set(i, body(i))
                gate.signal()
                group.leave()
            }
            t.stackSize = 8 << 20
            t.start()
        }
        group.wait()
        return slots.values()
    }
}

private final class ResultSlots<R>: @unchecked Sendable {
    private var slots: [R?]
    private let lock = NSLock()
    init(_ n: Int) { slots = Array(repeating: nil, count: n) }
    func set(_ i: Int, _ r: R) { lock.withLock { slots[i] = r } }
    func values() -> [R] { lock.withLock { slots.map { $0! } } }
}

/// The terminal progress of several guests at once: one line per kernel, redrawn in place.
public final class ProgressBoard: @unchecked Sendable {
    private let kernels: [String]
    private var states: [String: String] = [:]
    private var drawn = false
    private let lock = NSLock()
    private let write: (String) -> Void

    public init(kernels: [String], write: @escaping (String) -> Void) {
        self.kernels = kernels
        self.write = write
    }

    public func update(_ kernel: String, _ state: String) {
        lock.withLock {
            // The harness's own messages may already name the kernel.
            states[kernel] = state.hasPrefix(kernel + ": ") ? String(state.dropFirst(kernel.count + 2)) : state
            write(frame())
        }
    }

    /// The screen text that replaces the previous frame.
    func frame() -> String {
        var s = drawn && kernels.count > 1 ? "\r\u{1b}[\(kernels.count - 1)A" : "\r"
        for (i, k) in kernels.enumerated() {
            s += "\u{1b}[K\(k): \(states[k] ?? "waiting")" + (i < kernels.count - 1 ? "\n" : "")
        }
        drawn = true
        return s
    }

    /// Wipes the board so the summary starts on a clean screen.
    public func clear() {
        lock.withLock {
            guard drawn else { return }
            write((kernels.count > 1 ? "\r\u{1b}[\(kernels.count - 1)A" : "\r") + "\u{1b}[J")
            drawn = false
        }
    }
}
