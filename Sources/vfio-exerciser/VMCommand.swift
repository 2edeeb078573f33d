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

    @Option(help: "Your own kernel image (bzImage) instead of a Debian package.")
    var kernelImage: String?

    @Option(help: "Modules for --kernel-image: a root holding lib/modules/<release>, or that directory.")
    var modules: String?

    @OptionGroup var matrix: MatrixOptions

    @Option(help: "Where kernels are downloaded and kept (default: $XDG_CACHE_HOME or ~/.cache, /vfio-exerciser).")
    var cache: String = {
        let env = ProcessInfo.processInfo.environment
        let base = env["XDG_CACHE_HOME"] ?? ((env["HOME"] ?? "/root") + "/.cache")
        return base + "/vfio-exerciser"
    }()

    @Option(help: "Where reports, console log and initramfs go (one subdirectory per kernel).")
    var out = "out"

    @Option(help: "Seconds before a hung guest is killed.")
    var timeout: Double = 300

    @Flag(help: "Use KVM instead of TCG (nested KVM hangs on some hosts).")
    var kvm = false

    @Option(help: "Binary to run inside the guest.")
    var guestBinary: String?

    @Option(name: .customLong("qemu-arg"), help: ArgumentHelp("Extra QEMU argument, as it is (repeatable).", valueName: "arg"))
    var qemuArgs: [String] = []

    @Option(help: .hidden)
    var inject: String?

    @Option(help: "Run this shell script in the guest instead of the matrix; its output on /dev/ttyS1 is printed.")
    var guestScript: String?

    func validate() throws {
        try validateSeconds(timeout, "--timeout")
    }

    func run() throws {
        do { try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true) } catch {
            throw UsageError("cannot create cache directory \(cache): \(error.localizedDescription)")
        }
        let (dir, _, _) = try matrix.load()
        guard let scripts = VMHarness.locateScripts() else {
            throw UsageError("cannot find scripts/fetch-kernel.sh (run from the repository)")
        }
        let guest = guestBinary ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        guard FileManager.default.isExecutableFile(atPath: guest) else { throw UsageError("guest binary \(guest) is not executable") }
        let kernels = kernelImage != nil ? ["local"] : (kernel.isEmpty ? ["debian:6.1"] : kernel)
        var guestArgs = matrix.guestArguments
        if let i = inject { guestArgs += ["--inject", i] }
        var codes: [Int32] = []
        var summary: [String] = []
        for k in kernels {
            let name = k.replacingOccurrences(of: ":", with: "-")
            var c = VMHarness.Config(cacheDir: absolute(cache), outDir: absolute(out) + "/" + name, scriptsDir: scripts,
                                     configsDir: absolute(dir), guestBinary: guest)
            c.kernel = k
            c.kernelImage = kernelImage
            c.modulesDir = modules
            c.guestArgs = guestArgs
            c.timeout = timeout
            c.kvm = kvm
            c.extraQEMU = qemuArgs
            if let script = guestScript {
                let r = try VMHarness(config: c, progress: progress).runScript(absolute(script))
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
        }
        for s in summary { FileHandle.standardError.write(Data((s + "\n").utf8)) }
        throw ExitCode(codes.contains(1) ? 1 : codes.allSatisfy { $0 == 4 } ? 4 : 0)
    }

    func absolute(_ p: String) -> String {
        p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
    }
}
