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
        The guest runs the binary given by --guest-binary (default: this one; build it with
        `swift build -c release --static-swift-stdlib`).
        """)

    @Option(help: "Kernel to boot (repeatable): debian:6.1, debian:6.12, debian:7.3 or a Debian version.")
    var kernel: [String] = []

    @OptionGroup var guest: GuestOptions

    @OptionGroup var matrix: MatrixOptions

    @Option(help: "Where reports, console log and initramfs go (one subdirectory per kernel).")
    var out = "out"

    @Option(help: "Seconds before a hung guest is killed.")
    var timeout: Double = 300

    @Option(help: .hidden)
    var inject: String?

    @Option(help: "Run this shell script in the guest instead of the matrix; its output on /dev/ttyS1 is printed.")
    var guestScript: String?

    @Flag(help: "Exit codes for `git bisect run`: 0 every case passed, 1 a case failed, 125 the kernel could not be tested.")
    var bisect = false

    func validate() throws {
        try validateSeconds(timeout, "--timeout")
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
        var bisectCodes: [Int32] = []
        let (dir, _, _) = try matrix.load()
        let prepared = try guest.prepare()
        let kernels = guest.kernels(kernel, fallback: ["debian:6.1"])
        var guestArgs = matrix.guestArguments
        if let i = inject { guestArgs += ["--inject", i] }
        var codes: [Int32] = []
        var summary: [String] = []
        for k in kernels {
            let name = k.replacingOccurrences(of: ":", with: "-")
            var c = guest.config(kernel: k, outDir: absolutePath(out) + "/" + name, configsDir: dir, timeout: timeout, prepared: prepared)
            c.guestArgs = guestArgs
            c.strictSkips = matrix.strictSkips
            if let script = guestScript {
                let r = try VMHarness(config: c, progress: progress).runScript(absolutePath(script))
                progressDone()
                print(r.results, terminator: "")
                for i in r.incidents { print("# incident: \(i)") }
                codes.append(r.exitCode == 0 && r.incidents.isEmpty ? 0 : 1)
                continue
            }
            let outcome = try VMHarness(config: c, progress: progress).run()
            progressDone()
            let r = outcome.report
            for f in ReportFormat.allCases {
                let text = Reporter.render(r, format: f, color: false)
                try text.write(toFile: c.outDir + "/report." + (f == .table ? "txt" : f.rawValue), atomically: true, encoding: .utf8)
            }
            try matrix.emit(r)
            let line = String(format: "%@: %@ — %d passed, %d failed, %d skipped, %d xfail; QEMU start to verdict %.1f s; reports in %@",
                              k, r.header.kernelRelease, r.count(.pass), r.count(.fail), r.count(.skip), r.count(.xfail),
                              outcome.bootSeconds, c.outDir)
            summary.append(line)
            codes.append(r.exitCode)
            bisectCodes.append(Bisect.exitCode(report: r, error: nil))
        }
        for s in summary { FileHandle.standardError.write(Data((s + "\n").utf8)) }
        return (codes.contains(1) ? 1 : codes.allSatisfy { $0 == 4 } ? 4 : 0, bisectCodes)
    }
}
