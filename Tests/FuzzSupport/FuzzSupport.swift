import Dispatch
import Exerciser
import Foundation

// Shared by the two fuzz suites (configs, command lines): a fixed-seed generator, a hang
// watchdog, a parallel map and a child-process runner.

/// SplitMix64: small, fixed-seed, no Foundation randomness.
public struct FuzzRNG {
    var rng: SeededRNG
    public init(seed: UInt64) { rng = SeededRNG(seed: seed) }
    public mutating func next() -> UInt64 { rng.next() }
    public mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }
    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(UInt64(1) << 53) < p }
    public mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
    public mutating func int(_ r: ClosedRange<Int>) -> Int { r.lowerBound + below(r.count) }
}

extension FuzzRNG: RandomNumberGenerator {}

/// Aborts the test process, naming the input, if one input runs past `limit` seconds: a hang
/// fails the suite instead of stalling it. One slot per worker thread.
public final class Watchdog: @unchecked Sendable {
    private let lock = NSLock()
    private var started: [UInt64]
    private var labels: [String]
    private var inputs: [[UInt8]]
    private var stopped = false
    private let limit: Double
    private let save: (([UInt8]) -> String)?

    /// `save` keeps a hung input somewhere and says where (for the message).
    public init(limit: Double, slots: Int, save: (([UInt8]) -> String)? = nil) {
        self.save = save
        self.limit = limit
        started = Array(repeating: 0, count: slots)
        labels = Array(repeating: "", count: slots)
        inputs = Array(repeating: [], count: slots)
        Thread { [self] in loop() }.start()
    }

    public func begin(_ slot: Int, _ label: String, _ input: [UInt8] = []) {
        lock.withLock { (started[slot], labels[slot], inputs[slot]) = (DispatchTime.now().uptimeNanoseconds, label, input) }
    }

    /// The first slot (0 = idle) started more than `limit` seconds before `now`. A start after
    /// `now` is not overdue: unsigned `now - start` would trap (CI's unit tests died on that).
    public static func overdue(_ started: [UInt64], now: UInt64, limit: Double) -> Int? {
        started.indices.first { started[$0] != 0 && now > started[$0] && Double(now - started[$0]) / 1e9 > limit }
    }

    public func end(_ slot: Int) { lock.withLock { started[slot] = 0 } }
    public func stop() { lock.withLock { stopped = true } }

    private func loop() {
        while true {
            usleep(200_000)
            let (stop, stuck) = lock.withLock { () -> (Bool, (String, [UInt8])?) in
                let s = Self.overdue(started, now: DispatchTime.now().uptimeNanoseconds, limit: limit)
                return (stopped, s.map { (labels[$0], inputs[$0]) })
            }
            if stop { return }
            if let (label, input) = stuck {
                let saved = save.map { " (input in \($0(input)))" } ?? ""
                FileHandle.standardError.write(Data("fuzz: \(label) still running after \(limit) s\(saved)\n".utf8))
                abort()
            }
        }
    }
}

public func fuzzWorkers() -> Int { min(8, max(1, ProcessInfo.processInfo.activeProcessorCount)) }

/// `body(index, worker)` for every index on `workers` threads; the results in index order.
final class ParallelResults<T>: @unchecked Sendable {
    let lock = NSLock()
    var next = 0
    var results: [T?]
    init(_ n: Int) { results = Array(repeating: nil, count: n) }
}

public func parallelMap<T>(_ indices: [Int], workers: Int, _ body: @escaping @Sendable (Int, Int) -> T) -> [T] {
    let shared = ParallelResults<T>(indices.count)
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        while true {
            let k: Int = shared.lock.withLock { defer { shared.next += 1 }; return shared.next }
            if k >= indices.count { return }
            let r = body(indices[k], w)
            shared.lock.withLock { shared.results[k] = r }
        }
    }
    return shared.results.map { $0! }
}

public struct Spawned {
    public var status: Int32 = -1
    public var signal: Int32 = 0
    public var stdout: [UInt8] = []
    public var stderr: [UInt8] = []
    public var seconds = 0.0
    public var timedOut = false
}

/// The debug binary built next to this test bundle.
public func builtBinary() -> String? {
    var candidates = [URL(fileURLWithPath: CommandLine.arguments.first ?? "").deletingLastPathComponent().appendingPathComponent("vfio-exerciser").path]
    candidates.append(packageRoot + "/.build/debug/vfio-exerciser")
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// Runs each (executable, arguments) with stdin from /dev/null and stdout/stderr captured, a few at
/// a time, killing any still running after `timeout` seconds.
public func spawnAll(_ jobs: [(String, [String])], timeout: Double, parallel: Int = 4, environment: [String: String] = [:]) -> [Spawned] {
    final class Shared: @unchecked Sendable {
        let lock = NSLock()
        var next = 0
        var results: [Spawned]
        init(_ n: Int) { results = Array(repeating: Spawned(), count: n) }
    }
    let shared = Shared(jobs.count)
    DispatchQueue.concurrentPerform(iterations: parallel) { _ in
        while true {
            let i: Int = shared.lock.withLock { defer { shared.next += 1 }; return shared.next }
            if i >= jobs.count { return }
            let r = spawn(jobs[i].0, jobs[i].1, timeout: timeout, environment: environment)
            shared.lock.withLock { shared.results[i] = r }
        }
    }
    return shared.results
}

public func spawn(_ exe: String, _ args: [String], timeout: Double, environment: [String: String] = [:]) -> Spawned {
    var r = Spawned()
    let dir = NSTemporaryDirectory()
    let tag = "\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    let outPath = dir + "vfio-fuzz-out-\(tag)", errPath = dir + "vfio-fuzz-err-\(tag)"
    defer { unlink(outPath); unlink(errPath) }
    var fa = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&fa)
    defer { posix_spawn_file_actions_destroy(&fa) }
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&fa, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&fa, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    let argv = ([exe] + args).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var env = ProcessInfo.processInfo.environment
    env["VFIO_EXERCISER_CONFIGS"] = nil
    env.merge(environment) { $1 }
    let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for p in envp { free(p) } }
    var pid: pid_t = 0
    let t0 = DispatchTime.now().uptimeNanoseconds
    guard posix_spawn(&pid, exe, &fa, nil, argv, envp) == 0 else { return r }
    var status: Int32 = 0
    while true {
        let w = waitpid(pid, &status, WNOHANG)
        if w == pid { break }
        if w < 0 && errno != EINTR { break }
        if Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 > timeout, !r.timedOut {
            r.timedOut = true
            kill(pid, SIGKILL)
        }
        usleep(2_000)
    }
    r.seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    // WIFEXITED / WEXITSTATUS / WTERMSIG spelled out (macros).
    if status & 0x7F == 0 { r.status = (status >> 8) & 0xFF } else { r.signal = status & 0x7F }
    r.stdout = Array(FileManager.default.contents(atPath: outPath) ?? Data())
    r.stderr = Array(FileManager.default.contents(atPath: errPath) ?? Data())
    return r
}

/// The package's root directory (this file is Tests/FuzzSupport/FuzzSupport.swift).
public let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// How deep the fuzz suites go: a fixed, seeded set by default (seconds), every generated input
/// with VFIO_EXERCISER_FUZZ=deep (minutes). Anything else is an error, not a silent default.
public enum FuzzDepth: String {
    case quick, deep

    public static let variable = "VFIO_EXERCISER_FUZZ"

    public static func current() throws -> FuzzDepth {
        guard let v = ProcessInfo.processInfo.environment[variable], !v.isEmpty else { return .quick }
        guard let d = FuzzDepth(rawValue: v) else {
            throw FuzzDepthError(description: "\(variable)=\(v.debugDescription): expected \"quick\" or \"deep\"")
        }
        return d
    }

    /// `quick` inputs or `deep` inputs.
    public func count(quick: Int, deep: Int) -> Int { self == .deep ? deep : quick }
}

public struct FuzzDepthError: Error, CustomStringConvertible {
    public var description: String
}
