import ArgumentParser
import Exerciser
import Foundation

struct VM: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a kernel in QEMU with an emulated IOMMU and edu devices, run the matrix inside, judge on the host.",
        discussion: """
        Kernels: debian:6.1 (bookworm), debian:6.12 (trixie), debian:7.3 (trixie-backports), or an exact
        Debian kernel version; or your own build with --kernel-image and --modules. Results stream out of
        the guest's second serial port as each case ends, so a panic or hang keeps every finished case.
        Several kernels boot side by side, up to --jobs at once, each in its own directory under --out;
        the exit code is the worst of them (1 any failure, 2 a kernel that could not run, 4 all skipped).
        The guest runs the binary given by --guest-binary (default: this one; build it with
        `swift build -c release --static-swift-stdlib`).
        """)

    @Option(help: "Kernel to boot (repeatable): debian:6.1, debian:6.12, debian:7.3 or a Debian version.")
    var kernel: [String] = []

    @OptionGroup var guest: GuestOptions

    @OptionGroup var matrix: MatrixOptions

    @Option(help: "Where reports, console log and initramfs go (one subdirectory per kernel).")
    var out = "out"

    @Option(help: ArgumentHelp("Boot only these (repeatable): plain, or a boot of matrix.yaml such as movable (default: all).", valueName: "name"))
    var boot: [String] = []

    @Option(help: "Seconds before a hung guest is killed.")
    var timeout: Double = 300

    @Option(help: "Guests booted at once (default: the number of cores).")
    var jobs: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: .hidden)
    var inject: String?

    @Option(help: "Run this shell script in the guest instead of the matrix; its output on /dev/ttyS1 is printed.")
    var guestScript: String?

    @Flag(help: "Exit codes for `git bisect run`: 0 every case passed, 1 a case failed, 125 the kernel could not be tested.")
    var bisect = false

    @Option(name: .customLong("guest-file"), help: ArgumentHelp("A host file put into the guest at an absolute path (repeatable).",
                                                                valueName: "host-path:guest-path"))
    var guestFiles: [String] = []

    func validate() throws {
        try validateSeconds(timeout, "--timeout")
        guard (1...1024).contains(jobs) else { throw ValidationError("--jobs \(jobs) is not between 1 and 1024") }
        for f in guestFiles {
            let parts = f.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, parts[1].hasPrefix("/"), !parts[1].contains(":") else {
                throw ValidationError("--guest-file \(f) is not HOST-PATH:/GUEST-PATH")
            }
            guard FileManager.default.isReadableFile(atPath: parts[0]) else { throw ValidationError("--guest-file: cannot read \(parts[0])") }
        }
    }

    /// What one job hands back: the judged run or the script's output.
    enum JobResult: Sendable {
        case run(KernelRun)
        case script(kernel: String, text: String, code: Int32)
    }

    func run() throws {
        guard bisect else { throw ExitCode(try runKernels().exit) }
        let verdicts: [Int32]
        do { verdicts = try runKernels().bisect } catch {
            FileHandle.standardError.write(Data("vfio-exerciser: \(error) (untestable: exit 125 for git bisect)\n".utf8))
            throw ExitCode(Bisect.skip)
        }
        // Worst first: a failing kernel is bad even if another could not be tested.
        throw ExitCode(verdicts.contains(Bisect.bad) ? Bisect.bad : verdicts.contains(Bisect.skip) || verdicts.isEmpty ? Bisect.skip : Bisect.good)
    }

    /// The kselftest exit code of the whole run, and each kernel's bisect code.
    func runKernels() throws -> (exit: Int32, bisect: [Int32]) {
        let (dir, m, _) = try matrix.load()
        if let bad = BootPlan.unknown(boot, boots: m.boots) { throw UsageError(bad) }
        let prepared = try guest.prepare()
        // A script runs once per kernel, on the plain boot.
        let guests = BootPlan.runs(kernels: guest.kernels(kernel, fallback: ["debian:6.1"]), boots: m.boots,
                                   selected: guestScript == nil ? boot : [BootPlan.plain], kinds: matrix.kinds)
        if guests.isEmpty { throw UsageError("--boot and --kind leave no guest to boot") }
        if guests.count > 1, let o = matrix.output {
            throw UsageError("--output \(o) takes one report and this run boots \(guests.count) guests (\(guests.map(\.label).joined(separator: ", "))): "
                             + "add --boot plain or one --kernel, or read each from \(out)/<guest>/report.*")
        }
        let kernels = guests.map(\.label)
        let configs = guests.map { g in
            var c = guest.config(kernel: g.kernel, outDir: absolutePath(out) + "/" + g.directory,
                                 configsDir: dir, timeout: timeout, prepared: prepared)
            c.extraAppend += g.append
            c.guestArgs = matrix.guestArguments(kinds: g.kinds) + (inject.map { ["--inject", $0] } ?? [])
            c.strictSkips = matrix.strictSkips
            c.guestFiles = guestFiles.map { f in
                let p = f.split(separator: ":", maxSplits: 1).map(String.init)
                return (absolutePath(p[0]), p[1])
            }
            return c
        }
        let script = guestScript.map(absolutePath)
        let board = ProgressBoard(kernels: kernels) { s in if showsProgress { FileHandle.standardError.write(Data(s.utf8)) } }
        let start = Date()
        let results = JobPool.run(count: configs.count, jobs: jobs) { i -> Result<JobResult, UsageError> in
            let c = configs[i], label = kernels[i]
            let h = VMHarness(config: c) { board.update(label, $0) }
            do {
                if let script {
                    let r = try h.runScript(script)
                    var text = r.results
                    for inc in r.incidents { text += "# incident: \(inc)\n" }
                    return .success(.script(kernel: label, text: text, code: r.exitCode == 0 && r.incidents.isEmpty ? 0 : 1))
                }
                let o = try h.run()
                try Self.writeReports(o.report, to: c.outDir)
                return .success(.run(KernelRun(kernel: label, result: .report(o.report, seconds: o.bootSeconds, outDir: c.outDir))))
            } catch let e as UsageError {
                return .failure(e)
            } catch {
                return .failure(UsageError(CLI.termination(for: error).stderr
                    .replacingOccurrences(of: CLI.errorPrefix, with: "").trimmingCharacters(in: .whitespacesAndNewlines)))
            }
        }
        board.clear()
        // No kernel ran: the one line of exit 2 names each kernel's reason (one kernel: its own).
        let errors = results.compactMap { r -> UsageError? in if case .failure(let e) = r { return e } else { return nil } }
        if errors.count == results.count, let first = errors.first {
            if Set(errors.map(\.description)).count == 1 { throw first }
            throw UsageError(zip(kernels, errors).map { "\($0): \($1.description)" }.joined(separator: "; "))
        }
        if script != nil {
            // Scripts: their output in kernel order; exit 1 when any failed or could not run.
            var ok = true
            for (k, r) in zip(kernels, results) {
                switch r {
                case .success(.script(_, let text, let code)):
                    print(text, terminator: "")
                    ok = ok && code == 0
                case .failure(let e):
                    FileHandle.standardError.write(Data("\(k): not run: \(e.description)\n".utf8))
                    ok = false
                case .success(.run):
                    ok = false
                }
            }
            return (ok ? 0 : 1, [])
        }
        var runs: [KernelRun] = []
        for (k, r) in zip(kernels, results) {
            switch r {
            case .failure(let e): runs.append(KernelRun(kernel: k, result: .error(e.description)))
            case .success(.script): break
            case .success(.run(let run)):
                if case .report(let report, _, _) = run.result { try matrix.emit(report) }
                runs.append(run)
            }
        }
        for s in VMSummary.lines(runs, wallSeconds: runs.count > 1 ? Date().timeIntervalSince(start) : nil) {
            FileHandle.standardError.write(Data((s + "\n").utf8))
        }
        return (VMSummary.exitCode(runs), runs.map { run in
            if case .report(let r, _, _) = run.result { return Bisect.exitCode(report: r, error: nil) }
            return Bisect.skip
        })
    }

    static func writeReports(_ r: RunReport, to dir: String) throws {
        for f in ReportFormat.allCases {
            let text = Reporter.render(r, format: f, color: false)
            let path = dir + "/report." + (f == .table ? "txt" : f.rawValue)
            do { try text.write(toFile: path, atomically: true, encoding: .utf8) } catch {
                throw UsageError("cannot write \(path): \(error.localizedDescription)")
            }
        }
    }
}
