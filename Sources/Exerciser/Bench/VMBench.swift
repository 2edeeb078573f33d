import Foundation

/// `bench --vm`: the bench in the test VM, its stream read back on the host like the matrix's.
extension VMHarness {
    public struct BenchOutcome {
        /// What came back (possibly partial, with incidents); nil when the guest sent nothing.
        public var run: BenchRun?
        public var finished: Bool
        public var bootSeconds: Double
        public var consoleLog: String
    }

    /// Builds bench/map_bench.c static with bench/build.sh into `out`; returns the binary's path.
    public static func buildCHelper(benchDir: String, out: String) throws -> String {
        try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: out).deletingLastPathComponent().path, withIntermediateDirectories: true)
        let log = URL(fileURLWithPath: out + ".log")
        let r = try sh(["bash", benchDir + "/build.sh", out], stderrTo: log)
        guard r.status == 0, FileManager.default.isExecutableFile(atPath: out) else {
            let tail = ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(whereSeparator: \.isNewline).last.map(String.init) ?? ""
            throw UsageError("building the C helper failed: \(tail) (log: \(log.path))")
        }
        return out
    }

    /// Boots the kernel with `vfio-exerciser bench <benchArgs>` as the payload; the C helper,
    /// when given, rides along as /bin/map_bench and the guest runs it after each backend.
    public func runBench(benchArgs: [String], cHelper: String?) throws -> BenchOutcome {
        var args = ["bench", "--device", config.device, "--stream", "/dev/ttyS1"] + benchArgs
        var files: [(String, String)] = []
        if let h = cHelper {
            args += ["--c-helper", "/bin/map_bench"]
            files.append((h, "/bin/map_bench"))
        }
        let kernel = config.kernel
        let boot = try self.boot(args: args, files: files) { text in
            let s = BenchStreamContents(text: text)
            guard s.run != nil else { return nil }
            return "\(kernel): bench point \(s.pointCount)/\(s.planned)"
        }
        let stream = BenchStreamContents(text: boot.results)
        var incidents = self.incidents(boot)
        if !stream.finished && incidents.isEmpty {
            incidents.append("the guest bench ended without its end marker (qemu exit \(boot.qemuStatus))")
        }
        guard var run = stream.run else {
            let setup = boot.console.split(whereSeparator: \.isNewline).filter { $0.contains("VFIO-EXERCISER-SETUP-ERROR") || $0.contains("error:") }
            throw UsageError("the guest produced no bench results" + (setup.first.map { ": \($0)" } ?? "") + " (console: \(boot.consolePath))")
        }
        run.label = config.kernel
        run.qemuSeconds = boot.seconds
        run.incidents = incidents
        return BenchOutcome(run: run, finished: stream.finished, bootSeconds: boot.seconds, consoleLog: boot.consolePath)
    }
}
