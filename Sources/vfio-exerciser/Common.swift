import ArgumentParser
import Exerciser
import Foundation

extension ReportFormat: ExpressibleByArgument {}
extension BackendKind: ExpressibleByArgument {}
extension CaseKind: ExpressibleByArgument {}
extension CaseEvent: ExpressibleByArgument {}

enum ColorMode: String, ExpressibleByArgument, CaseIterable {
    case auto, always, never
}

/// The report formats, plus `summary`: the grid that fits the terminal, then the failures.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case summary, table, json, ktap, junit

    /// The grid on a terminal; the full table into files and pipes.
    static func defaultFor(file: String?) -> OutputFormat { file == nil && isatty(1) != 0 ? .summary : .table }

    static func render(_ r: RunReport, _ f: OutputFormat, color: Bool) -> String {
        if f == .summary { return GridSummary.render(r, width: terminalWidth(), color: color) }
        return Reporter.render(r, format: ReportFormat(rawValue: f.rawValue)!, color: color)
    }
}

/// $COLUMNS, else the terminal's width, else 80.
func terminalWidth() -> Int {
    if let c = ProcessInfo.processInfo.environment["COLUMNS"].flatMap(Int.init), c > 0 { return c }
    var w = winsize()
    if ioctl(1, UInt(TIOCGWINSZ), &w) == 0, w.ws_col > 0 { return Int(w.ws_col) }
    return 80
}

/// Options shared by `run` and `vm`: what to run and how to report it.
struct MatrixOptions: ParsableArguments {
    @Option(name: .long, help: "Directory holding matrix.yaml, expectations.yaml and skips.yaml.")
    var configs: String?

    @Option(name: .customLong("backend"), help: "Run only this backend (repeatable).")
    var backends: [BackendKind] = []

    @Option(name: .customLong("kind"), help: "Run only this case kind (repeatable; see `list`).")
    var kinds: [CaseKind] = []

    // --- events (issue 13)
    @Option(name: .customLong("event"), help: "Run only this kind × event event (repeatable; configs/events.yaml).")
    var events: [CaseEvent] = []

    @Flag(help: "Run no kind × event cases.")
    var noEvents = false

    @Flag(help: "Run only the kind × event cases (and the kinds --kind names).")
    var onlyEvents = false

    func eventPlan(_ config: EventConfig, _ m: Matrix) -> [PlannedCase] {
        noEvents ? [] : config.plan(backends: backends.isEmpty ? nil : backends, kinds: kinds.isEmpty ? nil : kinds,
                                    events: events.isEmpty ? nil : events, matrix: m)
    }
    // --- end events

    @Option(help: "Report format (default: summary on a terminal, table elsewhere).")
    var format: OutputFormat?

    @Option(help: "Write the report here instead of standard output.")
    var output: String?

    @Option(help: "Colour in the table.")
    var color: ColorMode = .auto

    @Flag(help: "Skip the DMA data check through the device.")
    var noDataCheck = false

    @Option(help: "Seconds a case may take before its child is killed and the case reported as timed out.")
    var caseTimeout: Double = 120

    @Flag(help: "Run every case in the tool's own process (no per-case child; a crash ends the run).")
    var noIsolation = false

    @Flag(help: "Fail any skip skips.yaml does not expect, and any case it expects to skip that ran.")
    var strictSkips = false

    /// The run options a `vm` forwards to the tool inside the guest (`kinds`: a boot's, in place of --kind).
    func guestArguments(kinds only: [CaseKind]? = nil) -> [String] {
        var a: [String] = []
        for b in backends { a += ["--backend", b.rawValue] }
        for k in only ?? kinds { a += ["--kind", k.rawValue] }
        if noDataCheck { a.append("--no-data-check") }
        if noIsolation { a.append("--no-isolation") }
        for e in events { a += ["--event", e.rawValue] }  // events (issue 13)
        if noEvents { a.append("--no-events") }
        if onlyEvents { a.append("--only-events") }
        a += ["--case-timeout", String(caseTimeout)]
        return a
    }

    func validate() throws {
        try validateSeconds(caseTimeout, "--case-timeout")
    }

    func load() throws -> (dir: String, matrix: Matrix, expectations: Expectations) {
        let dir = try ConfigLocator.find(configs)
        let loaded = (dir, try Matrix.load(dir + "/matrix.yaml"), try Expectations.load(dir + "/expectations.yaml"))
        _ = try skips(dir)
        return loaded
    }

    /// skips.yaml, checked whenever it is there; required and applied with --strict-skips.
    func skips(_ dir: String) throws -> ExpectedSkips? {
        let path = dir + "/skips.yaml"
        guard strictSkips || FileManager.default.fileExists(atPath: path) else { return nil }
        let s = try ExpectedSkips.load(path)
        return strictSkips ? s : nil
    }

    func useColor(forFile: Bool) -> Bool {
        switch color {
        case .always: return true
        case .never: return false
        case .auto: return !forFile && isatty(1) != 0
        }
    }

    func emit(_ report: RunReport) throws {
        let text = OutputFormat.render(report, format ?? .defaultFor(file: output), color: useColor(forFile: output != nil))
        if let out = output {
            do { try text.write(toFile: out, atomically: true, encoding: .utf8) } catch {
                throw UsageError("cannot write \(out): \(error.localizedDescription)")
            }
        } else {
            print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
        }
    }
}

/// The test VM's kernel and machine, shared by `vm` and `bench --vm` (each keeps its own
/// --kernel default, --out and --timeout).
struct GuestOptions: ParsableArguments {
    @Option(help: "Your own kernel image (bzImage) instead of a Debian package.")
    var kernelImage: String?

    @Option(help: "A built kernel tree (in-tree or the O= directory): its bzImage, .config and modules, and the test module built against it.")
    var kernelTree: String?

    @Option(help: "Modules for --kernel-image: a root holding lib/modules/<release>, or that directory.")
    var modules: String?

    @Option(help: "Where kernels are downloaded and kept (default: $XDG_CACHE_HOME or ~/.cache, /vfio-exerciser).")
    var cache: String = {
        let env = ProcessInfo.processInfo.environment
        return (env["XDG_CACHE_HOME"] ?? ((env["HOME"] ?? "/root") + "/.cache")) + "/vfio-exerciser"
    }()

    @Flag(help: "Use KVM instead of TCG (nested KVM hangs on some hosts).")
    var kvm = false

    @Option(help: "Binary to run inside the guest (default: this one).")
    var guestBinary: String?

    @Option(name: .customLong("qemu-arg"), help: ArgumentHelp("Extra QEMU argument, as it is (repeatable).", valueName: "arg"))
    var qemuArgs: [String] = []

    @Option(name: .customLong("append"), help: ArgumentHelp("Extra kernel command-line parameter (repeatable), e.g. movablecore=1G.", valueName: "param"))
    var append: [String] = []

    @Flag(help: "No NVMe controller in the VM: the edus are the only data-check engines.")
    var noNvme = false

    @Option(help: ArgumentHelp("Groups of rows the kernel's config must enable, or exit 2 before booting (comma-separated: \(Preflight.groups.joined(separator: ", "))).", valueName: "groups"))
    var require: String?

    var requiredGroups: [String] { require.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } } ?? [] }

    func validate() throws {
        if kernelTree != nil && (kernelImage != nil || modules != nil) { throw ValidationError("--kernel-tree brings its own image and modules: not with --kernel-image or --modules") }
        for g in requiredGroups where !Preflight.groups.contains(g) {
            throw ValidationError("--require \(g): no such group (groups: \(Preflight.groups.joined(separator: ", ")))")
        }
    }

    /// The cache directory made, the harness scripts found, the guest binary checked.
    func prepare() throws -> (scripts: String, guest: String) {
        do { try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true) } catch {
            throw UsageError("cannot create cache directory \(cache): \(error.localizedDescription)")
        }
        guard let scripts = VMHarness.locateScripts() else { throw UsageError("cannot find scripts/fetch-kernel.sh (run from the repository)") }
        // This binary by /proc/self/exe: argv[0] is a bare name when it was found on PATH.
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        let guest = guestBinary ?? me
        guard FileManager.default.isExecutableFile(atPath: guest) else { throw UsageError("guest binary \(guest) is not executable") }
        return (scripts, guest)
    }

    /// What to boot: "local" for --kernel-image, else the --kernel list or `fallback`.
    func kernels(_ given: [String], fallback: [String]) -> [String] {
        kernelTree != nil ? ["tree"] : kernelImage != nil ? ["local"] : (given.isEmpty ? fallback : given)
    }

    func config(kernel: String, outDir: String, configsDir: String, timeout: Double,
                prepared: (scripts: String, guest: String)) -> VMHarness.Config {
        var c = VMHarness.Config(cacheDir: absolutePath(cache), outDir: outDir, scriptsDir: prepared.scripts,
                                 configsDir: absolutePath(configsDir), guestBinary: prepared.guest)
        c.kernel = kernel
        c.kernelImage = kernelImage
        c.kernelTree = kernelTree.map(absolutePath)
        c.modulesDir = modules
        c.timeout = timeout
        c.kvm = kvm
        c.extraQEMU = qemuArgs
        c.extraAppend = append
        if noNvme { c.nvme = nil }
        c.require = requiredGroups
        return c
    }
}

func absolutePath(_ p: String) -> String {
    p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
}

/// Where the file-backed kinds put their files (run and bench).
struct RegionDirOptions: ParsableArguments {
    @Option(help: "Directory on a writeback filesystem (ext2/ext4) for fs-file.")
    var fsDir = "/mnt/fs"

    @Option(help: "Directory on tmpfs for tmpfs-file.")
    var tmpfsDir = "/dev/shm"

    @Option(help: "Directory on a filesystem mounted -o dax (pmem) for fsdax-file.")
    var fsdaxDir = "/mnt/dax"

    @Option(help: "Device-dax node for devdax (default: the first on /sys/bus/dax).")
    var devdax: String?
}

/// A timeout must be a positive, finite number of seconds the code can turn into nanoseconds
/// (`UInt64(timeout * 1e9)`) and an `Int` (the guest's kernel command line).
func validateSeconds(_ value: Double, _ option: String) throws {
    guard value.isFinite, value > 0, value <= 1_000_000 else {
        throw ValidationError("\(option) \(value) is not a number of seconds between 0 and 1000000")
    }
}

/// The shape of "0000:03:00.0" or "03:00.0" (hex digits; whether it exists is for sysfs to say):
/// anything else is refused before it becomes a sysfs path ("../.." would reach files outside
/// /sys/bus/pci/devices).
func validatePCIAddress(_ address: String, _ what: String) throws {
    func hex(_ s: Substring, _ digits: ClosedRange<Int>) -> Bool {
        digits.contains(s.count) && s.allSatisfy { $0.isASCII && $0.isHexDigit }
    }
    var parts = address.split(separator: ":", omittingEmptySubsequences: false)
    if parts.count == 3 { guard hex(parts.removeFirst(), 4...8) else { throw badAddress(address, what) } }
    let devfn = parts.last?.split(separator: ".", omittingEmptySubsequences: false) ?? []
    guard parts.count == 2, hex(parts[0], 2...2), devfn.count == 2, hex(devfn[0], 2...2), hex(devfn[1], 1...1) else {
        throw badAddress(address, what)
    }
}

private func badAddress(_ address: String, _ what: String) -> ValidationError {
    ValidationError("\(what) \"\(address)\" is not a PCI address such as 0000:03:00.0")
}

/// Progress goes to a terminal only, and not in the test VM, whose console tty is a log.
let showsProgress = isatty(2) != 0 && ProcessInfo.processInfo.environment["VFIO_EXERCISER_NO_PROGRESS"] == nil

func progress(_ s: String) {
    guard showsProgress else { return }
    FileHandle.standardError.write(Data("\r\u{1b}[K\(s)".utf8))
}

func progressDone() {
    guard showsProgress else { return }
    FileHandle.standardError.write(Data("\r\u{1b}[K".utf8))
}
