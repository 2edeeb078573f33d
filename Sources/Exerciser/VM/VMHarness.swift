import Foundation

/// Boots a kernel in QEMU (TCG, emulated Intel IOMMU, two edu devices), runs the exerciser
/// inside, and judges the results on the host as they stream out of the second serial port.
public struct VMHarness {
    public struct Config: Sendable {
        public var kernel: String = "debian:6.1"
        /// A user's own build instead of a Debian package: bzImage plus a modules root.
        public var kernelImage: String?
        public var modulesDir: String?
        /// A built kernel tree (`--kernel-tree`): image, config, modules and the test module's build.
        public var kernelTree: String?
        public var cacheDir: String
        public var outDir: String
        public var scriptsDir: String
        public var configsDir: String
        public var guestBinary: String
        public var guestArgs: [String] = []
        /// Judge with configsDir/skips.yaml (--strict-skips): the guest runs as always.
        public var strictSkips = false
        /// Preflight groups the kernel's config must have (--require): a missing one is an
        /// error before the boot.
        public var require: [String] = []
        public var timeout: Double = 300
        /// After an oops, seconds without a new result before the guest is ended (not the whole timeout).
        public var stallAfterOops: Double = 30
        public var kvm = false
        public var memory = "4G"
        public var extraAppend: [String] = []
        /// More files for the guest: (host path, guest path) (`--guest-file`).
        public var guestFiles: [(String, String)] = []
        /// Appended to QEMU's command line as they are (`--qemu-arg`).
        public var extraQEMU: [String] = []
        public var device = "0000:00:03.0"
        /// The second edu: peer-to-peer target (and the test module's special-PTE MMIO).
        public var peer = "0000:00:04.0"
        /// More edus whose DMA engines share a data check's transfers with the device's and the peer's.
        public var helpers = ["0000:00:05.0"]
        /// An NVMe controller over a pattern image (`NVMeImage`): the data checks' engine for
        /// every page of memory; the edus keep the MMIO and peer kinds. nil: no NVMe.
        public var nvme: String? = "0000:00:06.0"
        public init(cacheDir: String, outDir: String, scriptsDir: String, configsDir: String, guestBinary: String) {
            self.cacheDir = cacheDir
            self.outDir = outDir
            self.scriptsDir = scriptsDir
            self.configsDir = configsDir
            self.guestBinary = guestBinary
        }
    }

    public var config: Config
    public var progress: (String) -> Void

    public init(config: Config, progress: @escaping (String) -> Void) {
        self.config = config
        self.progress = progress
    }

    public struct Outcome {
        public var report: RunReport
        public var bootSeconds: Double
        public var consoleLog: String
    }

    /// Finds scripts/ next to the binary or in the working directory.
    public static func locateScripts() -> String? {
        var dirs = [FileManager.default.currentDirectoryPath]
        var d = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 { dirs.append(d.path); d = d.deletingLastPathComponent() }
        for dir in dirs where FileManager.default.isExecutableFile(atPath: dir + "/scripts/fetch-kernel.sh") {
            return dir + "/scripts"
        }
        return nil
    }

    @discardableResult
    static func sh(_ args: [String], stdout: URL? = nil, stderrTo: URL? = nil) throws -> (status: Int32, out: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        if let e = stderrTo {
            FileManager.default.createFile(atPath: e.path, contents: nil)
            p.standardError = try FileHandle(forWritingTo: e)
        }
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func fail(_ step: String, _ log: URL) -> UsageError {
        let tail = ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(whereSeparator: \.isNewline).last.map(String.init) ?? ""
        return UsageError("\(step) failed: \(tail) (log: \(log.path))")
    }

    /// A kernel directory as fetch-kernel.sh lays it out: vmlinuz, kver, modules/.
    func kernelDir() throws -> String {
        let log = URL(fileURLWithPath: config.outDir + "/fetch-kernel.log")
        if let tree = config.kernelTree {
            progress("laying out \(tree)")
            return try KernelTree.prepare(tree, cache: config.cacheDir, log: URL(fileURLWithPath: config.outDir + "/kernel-tree.log"))
        }
        if let image = config.kernelImage {
            return try Self.localKernel(image: image, modules: config.modulesDir, cache: config.cacheDir)
        }
        progress("fetching kernel \(config.kernel)")
        let r = try Self.sh([config.scriptsDir + "/fetch-kernel.sh", config.kernel, config.cacheDir + "/kernels"], stderrTo: log)
        guard r.status == 0, let dir = r.out.split(whereSeparator: \.isNewline).last.map(String.init), !dir.isEmpty else {
            throw fail("fetching \(config.kernel)", log)
        }
        return dir
    }

    /// Lays out a user's bzImage and modules root (…/lib/modules/<release>) like a fetched kernel.
    static func localKernel(image: String, modules: String?, cache: String) throws -> String {
        guard FileManager.default.fileExists(atPath: image) else { throw UsageError("no kernel image \(image)") }
        let dir = cache + "/kernels/local-" + String(UInt32(truncatingIfNeeded: image.hashValue), radix: 16)
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir + "/modules/lib/modules", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: image, toPath: dir + "/vmlinuz")
        var release = "unknown"
        if let m = modules {
            let root = URL(fileURLWithPath: m).standardizedFileURL
            // Accept either the root holding lib/modules/<rel> or lib/modules/<rel> itself.
            let relDir = FileManager.default.fileExists(atPath: root.path + "/lib/modules")
                ? (try FileManager.default.contentsOfDirectory(atPath: root.path + "/lib/modules")).sorted().first.map { root.path + "/lib/modules/" + $0 }
                : root.path
            guard let relDir else { throw UsageError("no lib/modules/<release> under \(m)") }
            release = URL(fileURLWithPath: relDir).lastPathComponent
            try FileManager.default.createSymbolicLink(atPath: dir + "/modules/lib/modules/" + release, withDestinationPath: relDir)
            // modules_install leaves lib/modules/<release>/build → the tree: the test module and
            // the preflight can use it.
            let build = URL(fileURLWithPath: relDir + "/build").resolvingSymlinksInPath().path
            if FileManager.default.fileExists(atPath: build + "/Makefile"), FileManager.default.fileExists(atPath: build + "/.config") {
                try FileManager.default.createSymbolicLink(atPath: dir + "/build", withDestinationPath: build)
                try FileManager.default.copyItem(atPath: build + "/.config", toPath: dir + "/config")
            }
        } else {
            try FileManager.default.createDirectory(atPath: dir + "/modules/lib/modules/\(release)", withIntermediateDirectories: true)
        }
        try release.write(toFile: dir + "/kver", atomically: true, encoding: .utf8)
        return dir
    }

    /// Two 128 MiB legacy pmem regions for the DAX kinds, carved from the top of q35's RAM above
    /// 4 GiB ([4G, 6G) with -m 4G), clear of the 1 GiB hugepage the guest reserves below them.
    /// Other memory sizes get none: the DAX kinds then skip, saying there is no pmem.
    static func pmemAppend(memory: String) -> [String] {
        memory == "4G" ? ["memmap=128M!5760M", "memmap=128M!5888M"] : []
    }

    /// What one boot left: the two serial logs, how long it took, and whether we had to kill it.
    public struct Boot {
        public var console: String
        public var results: String
        public var consolePath: String
        public var seconds: Double
        public var timedOut: Bool
        public var qemuStatus: Int32
        /// Set when the guest was ended after an oops: seconds since its last result.
        public var stalledAfter: Double? = nil
    }

    /// Builds the initramfs around `args` (one per line for the guest's /init) and boots it.
    func boot(args: [String], files: [(String, String)], liveProgress: @escaping (String) -> String?) throws -> Boot {
        try FileManager.default.createDirectory(atPath: config.outDir, withIntermediateDirectories: true)
        let out = URL(fileURLWithPath: config.outDir)
        let kdir = try kernelDir()
        if args.first == "run" { try preflight(kernelDir: kdir, guestArgs: args) }

        progress("building initramfs")
        try (args.joined(separator: "\n") + "\n").write(to: out.appendingPathComponent("guest-args"), atomically: true, encoding: .utf8)
        let initrd = out.appendingPathComponent("initramfs.cpio").path
        let buildLog = out.appendingPathComponent("initramfs.log")
        var cmd = [config.scriptsDir + "/build-initramfs.sh", "--kernel-dir", kdir, "--out", initrd, "--binary", config.guestBinary,
                   "--file", out.appendingPathComponent("guest-args").path + ":/etc/exerciser/args"]
        // The configs ride along always: anything the guest runs finds them in /etc/vfio-exerciser.
        let configs = [(config.configsDir + "/matrix.yaml", "/etc/vfio-exerciser/matrix.yaml"),
                       (config.configsDir + "/expectations.yaml", "/etc/vfio-exerciser/expectations.yaml")]
            + (FileManager.default.fileExists(atPath: config.configsDir + "/events.yaml")  // events (issue 13)
               ? [(config.configsDir + "/events.yaml", "/etc/vfio-exerciser/events.yaml")] : [])
        for (src, dst) in configs + config.guestFiles + files { cmd += ["--file", src + ":" + dst] }
        // The test module (kmod/) for the mixedmap kinds and the mdev backends; without it those
        // cases skip, saying the module is not loaded.
        let kmodLog = out.appendingPathComponent("kmod.log")
        if let r = try? Self.sh([config.scriptsDir + "/build-test-module.sh", kdir, config.cacheDir + "/kmod"], stderrTo: kmodLog),
           r.status == 0, let ko = r.out.split(whereSeparator: \.isNewline).last.map(String.init), ko.hasSuffix(".ko") {
            cmd += ["--extra-module", ko]
        } else {
            FileHandle.standardError.write(Data("vfio-exerciser: warning: the test module did not build for \(config.kernel) (\(kmodLog.path)); its cases will skip\n".utf8))
        }
        let b = try Self.sh(cmd, stderrTo: buildLog)
        guard b.status == 0 else { throw fail("building the initramfs", buildLog) }
        // The unpacked ELF when the kernel has a PVH entry: no self-decompression under TCG.
        let elf = (try? Self.sh([config.scriptsDir + "/extract-vmlinux.sh", kdir], stderrTo: out.appendingPathComponent("extract-vmlinux.log")))
            .flatMap { $0.status == 0 ? $0.out.trimmingCharacters(in: .whitespacesAndNewlines) : nil }
        let image = elf.flatMap { $0.isEmpty || !FileManager.default.fileExists(atPath: $0) ? nil : $0 } ?? kdir + "/vmlinuz"

        let console = out.appendingPathComponent("console.log")
        let results = out.appendingPathComponent("results.jsonl")
        for f in [console, results] { try? FileManager.default.removeItem(at: f) }
        // no_timer_check: with the host busy (guests side by side), the IO-APIC timer check can miss
        // its ticks under TCG and 6.1 panics at boot ("timer doesn't work through Interrupt-remapped IO-APIC").
        let append = (["console=ttyS0", "loglevel=5", "intel_iommu=on", "panic=-1", "no_timer_check", "hugepagesz=1G", "hugepages=1", "hugepagesz=2M", "hugepages=64", "secretmem.enable=1",
                       "brd.rd_nr=1", "brd.rd_size=65536"] + Self.pmemAppend(memory: config.memory) + [
                       "exerciser.timeout=\(Int(config.timeout))"] + config.extraAppend).joined(separator: " ")
        let q = ["qemu-system-x86_64", "-accel", config.kvm ? "kvm" : "tcg", "-M", "q35,kernel-irqchip=split",
                 "-cpu", config.kvm ? "host" : Self.tcgCPU, "-m", config.memory, "-smp", "1",
                 "-nodefaults", "-nographic", "-no-reboot",
                 "-device", "intel-iommu,intremap=on",
                 "-device", "edu,addr=03.0,dma_mask=0xffffffffffff",
                 "-device", "edu,addr=04.0,dma_mask=0xffffffffffff"] + config.helpers.flatMap { h in
                    ["-device", "edu,addr=\(h.split(separator: ":").last ?? ""),dma_mask=0xffffffffffff"] } + (try nvmeQEMU()) + [
                 "-kernel", image, "-initrd", initrd, "-append", append,
                 "-serial", "file:" + console.path, "-serial", "file:" + results.path] + config.extraQEMU
        try (q.map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ") + "\n")
            .write(to: out.appendingPathComponent("qemu-command"), atomically: true, encoding: .utf8)

        progress("booting \(config.kernel)")
        let qemu = Process()
        qemu.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        qemu.arguments = q
        let qlog = out.appendingPathComponent("qemu.log")
        FileManager.default.createFile(atPath: qlog.path, contents: nil)
        let qh = try FileHandle(forWritingTo: qlog)
        qemu.standardOutput = qh
        qemu.standardError = qh
        qemu.standardInput = FileHandle.nullDevice
        let start = Date()
        try qemu.run()
        var timedOut = false
        var stalledAfter: Double?
        var watch = StallWatch(start: 0, limit: config.stallAfterOops)
        var resultBytes = 0, consoleBytes = 0
        while qemu.isRunning {
            Thread.sleep(forTimeInterval: 0.2)
            let elapsed = Date().timeIntervalSince(start)
            let text = (try? String(contentsOf: results, encoding: .utf8)) ?? ""
            progress((liveProgress(text) ?? "booting \(config.kernel)") + String(format: " (%.0f s)", elapsed))
            if text.utf8.count != resultBytes { resultBytes = text.utf8.count; watch.progressed(at: elapsed) }
            let size = (try? FileManager.default.attributesOfItem(atPath: console.path)[.size] as? Int) ?? 0
            if !watch.oopsed, size != consoleBytes {
                consoleBytes = size
                if Self.oopsLine((try? String(contentsOf: console, encoding: .utf8)) ?? "") != nil { watch.oopsed(at: elapsed) }
            }
            // The guest's own timeout first, then ours with a margin for boot; an oopsed guest that
            // stopped producing results much sooner.
            let stalled = watch.shouldEnd(at: elapsed)
            if elapsed > config.timeout + 60 || stalled {
                if stalled { stalledAfter = elapsed - watch.lastResult } else { timedOut = true }
                qemu.terminate()
                Thread.sleep(forTimeInterval: 2)
                if qemu.isRunning { kill(qemu.processIdentifier, SIGKILL) }
                break
            }
        }
        qemu.waitUntilExit()
        try? qh.close()
        return Boot(console: (try? String(contentsOf: console, encoding: .utf8)) ?? "",
                    results: (try? String(contentsOf: results, encoding: .utf8)) ?? "",
                    consolePath: console.path, seconds: Date().timeIntervalSince(start), timedOut: timedOut,
                    qemuStatus: qemu.terminationStatus, stalledAfter: stalledAfter)
    }

    /// Run-level problems: panics and splats on the console, a killed guest or payload.
    func incidents(_ boot: Boot) -> [String] {
        var incidents = Self.consoleIncidents(boot.console)
        if boot.timedOut { incidents.append(String(format: "guest killed after %.0f s (timeout)", boot.seconds)) }
        if let s = boot.stalledAfter {
            incidents.append(String(format: "guest ended %.0f s after its last result: the kernel oopsed and the run made no more progress", s))
        }
        if let rc = Self.guestExit(boot.console), rc >= 124 {
            // timeout(1) gives 124, or 128+signal when the payload died of one (143: the TERM it sent).
            incidents.append("guest payload timed out or was killed (exit \(rc)\(rc > 128 ? ", signal \(rc - 128)" : ""))")
        }
        return incidents
    }

    /// Without ERMS the kernel clears and copies pages 8 bytes per store instead of `rep stosb`,
    /// which TCG runs a byte at a time: a 1 GiB hugetlb fault took 5.4 s, now 2.6 s.
    static let tcgCPU = "max,-erms"

    /// The kernel's config against the cases the guest will plan: each missing option named
    /// with the cases it takes away, before anything boots; `require` makes one an error.
    func preflight(kernelDir kdir: String, guestArgs: [String]) throws {
        let candidates = [kdir + "/config", kdir + "/build/.config"]
        guard let text = candidates.lazy.compactMap({ try? String(contentsOfFile: $0, encoding: .utf8) }).first else {
            if !config.require.isEmpty { throw UsageError("\(config.kernel): no kernel config to check --require against (\(candidates[0]))") }
            return
        }
        let matrix = try Matrix.load(config.configsDir + "/matrix.yaml")
        func values(_ flag: String) -> [String] { zip(guestArgs, guestArgs.dropFirst()).filter { $0.0 == flag }.map(\.1) }
        let backends = values("--backend").compactMap(BackendKind.init(rawValue:))
        let kinds = values("--kind").compactMap(CaseKind.init(rawValue:))
        let plan = Planner.plan(matrix, backends: backends.isEmpty ? nil : backends, kinds: kinds.isEmpty ? nil : kinds, bars: ["BAR0"])
        let findings = Preflight.check(KernelConfig(text: text), plan: plan)
        try Preflight.require(config.require, findings: findings, kernel: config.kernel)
        for f in findings where f.cases > 0 {
            FileHandle.standardError.write(Data("vfio-exerciser: \(config.kernel): \(f.line)\n".utf8))
        }
    }

    /// QEMU's arguments for the NVMe controller, its image written first (read-only to QEMU).
    func nvmeQEMU() throws -> [String] {
        guard let bdf = config.nvme else { return [] }
        let image = config.cacheDir + "/nvme-pattern-v2-\(NVMeImage.defaultSize >> 20)M.img"
        try FileManager.default.createDirectory(atPath: config.cacheDir, withIntermediateDirectories: true)
        try NVMeImage.ensure(at: image)
        return ["-drive", "file=\(image),if=none,format=raw,id=nvm,readonly=on",
                "-device", "nvme,addr=\(bdf.split(separator: ":").last ?? ""),serial=vfioex,drive=nvm"]
    }

    /// The matrix: `run` in the guest, results judged here with the host's configs.
    public func run() throws -> Outcome {
        let args = ["run", "--device", config.device, "--peer", config.peer]
            + (config.helpers + (config.nvme.map { [$0] } ?? [])).flatMap { ["--dma-helper", $0] } + ["--stream", "/dev/ttyS1", "--configs", "/etc/vfio-exerciser",
                    // The host reports from the stream; 100 KB of table through the emulated UART took seconds.
                    "--format", "table", "--color", "never", "--output", "/tmp/report.txt"] + config.guestArgs
        let kernel = config.kernel
        let boot = try self.boot(args: args, files: []) { text in
            let s = StreamContents(text: text)
            return s.header.map { "\(kernel): case \(s.records.count)/\($0.plan.count)" }
        }
        let stream = StreamContents(text: boot.results)
        var incidents = Self.unattributed(self.incidents(boot), caseLog: stream.records.flatMap(\.kernelLog))
        if stream.exitCode == nil && incidents.isEmpty {
            incidents.append("the guest run ended without its end marker (qemu exit \(boot.qemuStatus))")
        }
        guard let header = stream.header else {
            let setup = boot.console.split(whereSeparator: \.isNewline).filter { $0.contains("VFIO-EXERCISER-SETUP-ERROR") || $0.contains("error:") }
            let why = Self.oopsLine(boot.console).map { ": \($0.trimmingCharacters(in: .whitespaces))" } ?? setup.first.map { ": \($0)" } ?? ""
            throw UsageError("the guest produced no results" + why + " (console: \(boot.consolePath))")
        }
        let expectations = try Expectations.load(config.configsDir + "/expectations.yaml")
        let skips = config.strictSkips ? try ExpectedSkips.load(config.configsDir + "/skips.yaml") : nil
        let events = try EventConfig.load(dir: config.configsDir)  // events (issue 13)
        let report = Judge(expectations: expectations, strictSkips: skips, events: events).report(header: header, records: stream.records, incidents: incidents,
                                                              elapsed: boot.seconds, hygiene: stream.hygiene)
        return Outcome(report: report, bootSeconds: boot.seconds, consoleLog: boot.consolePath)
    }

    /// A shell script run in the guest instead of the matrix (harness tests that need several
    /// commands). Its output on /dev/ttyS1 comes back as text, with the exit code.
    public func runScript(_ script: String) throws -> (results: String, exitCode: Int?, incidents: [String]) {
        let boot = try self.boot(args: ["exec-script", "/etc/exerciser/guest-script.sh"],
                                 files: [(script, "/etc/exerciser/guest-script.sh")]) { _ in "script on \(config.kernel)" }
        return (boot.results, Self.guestExit(boot.console), incidents(boot))
    }

    /// Run-level failures visible on the console: panics, oopses, BUG and WARN splats.
    public static func consoleIncidents(_ text: String) -> [String] {
        var out: [String] = []
        for line in text.split(whereSeparator: \.isNewline) {
            let l = line.trimmingCharacters(in: .whitespaces)
            for marker in ["Kernel panic", "BUG:", "Oops:", "WARNING:", "Bad page", "general protection fault"] where l.contains(marker) {
                out.append("console: " + l.replacingOccurrences(of: "\r", with: ""))
                break
            }
        }
        return out
    }

    /// A WARN splat that a case caught in its own kernel log is judged with that case (a failure,
    /// or a known bug's XFAIL): it is not also a run-level incident. Panics, oopses and BUGs
    /// stay incidents, and so does any WARN no case claimed.
    public static func unattributed(_ incidents: [String], caseLog: [String]) -> [String] {
        func warn<S: StringProtocol>(_ s: S) -> String? {
            s.range(of: "WARNING:").map { String(s[$0.lowerBound...]).trimmingCharacters(in: .whitespaces) }
        }
        let claimed = Set(caseLog.compactMap { warn($0) })
        return incidents.filter { i in warn(i).map { !claimed.contains($0) } ?? true }
    }

    /// The first line saying the kernel oopsed (not a WARN: the kernel carries on after one).
    public static func oopsLine(_ text: String) -> String? {
        text.split(whereSeparator: \.isNewline).first { l in
            ["Oops:", "BUG:", "general protection fault", "Kernel panic", "Unable to handle kernel"].contains { l.contains($0) }
        }.map { String($0).replacingOccurrences(of: "\r", with: "") }
    }

    static func guestExit(_ text: String) -> Int? {
        text.split(whereSeparator: \.isNewline).compactMap { l -> Int? in
            guard let r = l.range(of: "VFIO-EXERCISER-EXIT ") else { return nil }
            return Int(l[r.upperBound...].prefix { $0.isNumber })
        }.last
    }
}

/// When to end a guest whose kernel oopsed: `limit` seconds after the later of its last result
/// and the oops, so a run that carries on after an oops (the case's child died, the rest go on)
/// is left alone.
public struct StallWatch: Sendable, Equatable {
    public var lastResult: Double
    public var oopsAt: Double?
    public var limit: Double
    public init(start: Double, limit: Double) {
        lastResult = start
        self.limit = limit
    }
    public var oopsed: Bool { oopsAt != nil }
    public mutating func progressed(at t: Double) { lastResult = t }
    public mutating func oopsed(at t: Double) { if oopsAt == nil { oopsAt = t } }
    public func shouldEnd(at t: Double) -> Bool {
        guard let o = oopsAt else { return false }
        return t - max(lastResult, o) >= limit
    }
}
