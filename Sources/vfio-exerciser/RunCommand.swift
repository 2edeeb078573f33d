import ArgumentParser
import Exerciser
import Foundation

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the matrix against a device bound to vfio-pci on this machine.")

    @Option(help: "PCI address of the device (e.g. 0000:00:03.0), bound to vfio-pci.")
    var device: String

    @OptionGroup var matrix: MatrixOptions

    @Option(help: "Append one JSON line per finished case here (survives a crash).")
    var stream: String?

    @OptionGroup var dirs: RegionDirOptions

    @Option(help: "A second device bound to vfio-pci (an edu) whose BAR0 the device DMAs into, for peer-bar.")
    var peer: String?

    @Option(name: .customLong("dma-helper"), help: ArgumentHelp(
        "A device bound to vfio-pci that runs data checks (repeatable): an edu, whose DMA engine joins the device's, or one NVMe controller, which checks every page by Read and Compare and never writes its namespace.",
        valueName: "bdf"))
    var helpers: [String] = []

    /// Test hook for the harness: "panic-after:N", "hang-after:N" or "oops-after:N" cases.
    @Option(help: .hidden)
    var inject: String?

    func injectFault(after count: Int) {
        guard let i = inject, let colon = i.firstIndex(of: ":"), let n = Int(i[i.index(after: colon)...]), n == count else { return }
        switch i[..<colon] {
        case "panic-after":
            _ = try? "c".write(toFile: "/proc/sysrq-trigger", atomically: false, encoding: .utf8)
        case "hang-after":
            while true { pause() }
        case "oops-after":
            // A child oopses in the test module holding its parameter lock; our own write then
            // waits on that lock for good (or, without the module, we hang: no oops, the test fails).
            let p = "/sys/module/vfio_exerciser_test/parameters/oops"
            let child = Process()
            child.executableURL = URL(fileURLWithPath: "/bin/sh")
            child.arguments = ["-c", "echo oops >\(p)"]
            try? child.run()
            child.waitUntilExit()
            _ = try? "oops".write(toFile: p, atomically: false, encoding: .utf8)
            while true { pause() }
        default:
            break
        }
    }

    @Flag(help: "Bind the device to vfio-pci for the run and give it back to its driver afterwards (also on signals; after a crash: `unbind --all`).")
    var bind = false

    @Flag(help: "With --bind: bind even if the device looks in use.")
    var force = false

    func validate() throws {
        try validatePCIAddress(device, "--device")
        if let peer { try validatePCIAddress(peer, "--peer") }
        for h in helpers { try validatePCIAddress(h, "--dma-helper") }
    }

    func run() throws {
        let (dir, m, expectations) = try matrix.load()
        let events = try EventConfig.load(dir: dir)  // events (issue 13)
        let judge = Judge(expectations: expectations, strictSkips: try matrix.skips(dir), events: events)
        if bind, let entry = try Binding.bind(device, force: force) {
            Binding.armSignals(entry)
            defer {
                Binding.disarm()
                do { try Binding.restore(entry) } catch { FileHandle.standardError.write(Data("vfio-exerciser: warning: \(error)\n".utf8)) }
            }
            try runMatrix(m, judge, events)
        } else {
            try runMatrix(m, judge, events)
        }
    }

    func runMatrix(_ m: Matrix, _ judge: Judge, _ events: EventConfig) throws {
        var opts = RunOptions(device: device)
        opts.fsDir = dirs.fsDir
        opts.tmpfsDir = dirs.tmpfsDir
        opts.fsdaxDir = dirs.fsdaxDir
        opts.devdax = dirs.devdax
        opts.peer = peer
        opts.helpers = helpers
        opts.dataCheck = !matrix.noDataCheck
        opts.inject = inject
        opts.isolate = !matrix.noIsolation
        opts.caseTimeout = matrix.caseTimeout
        let engine = try Engine(options: opts)
        let plan = (matrix.onlyEvents ? [] : Planner.plan(m, backends: matrix.backends.isEmpty ? nil : matrix.backends,
                                                          kinds: matrix.kinds.isEmpty ? nil : matrix.kinds, bars: Planner.memoryBARs(pciAddress: device)))
            + matrix.eventPlan(events, m)  // events (issue 13)
        if plan.isEmpty { throw UsageError("the filters leave no case to run") }
        // The running kernel's own config, where it shows it: what it lacks, before any case.
        if let text = KernelConfig.running() {
            for f in Preflight.check(KernelConfig(text: text), plan: plan) where f.cases > 0 {
                FileHandle.standardError.write(Data("vfio-exerciser: preflight (/proc/config.gz): \(f.line)\n".utf8))
            }
        }
        let header = RunHeader(tool: fullVersion, kernelRelease: kernelRelease(), device: PCIDeviceName.describe(device), plan: plan.map(\.id),
                               cmdline: BootParams.running())
        let writer = try stream.map { (p: String) throws(UsageError) in try StreamWriter(path: p) }
        writer?.emit(.header(header))
        var records: [CaseRecord] = []
        let before = HygieneSnapshot.take()
        let start = Date()
        try engine.run(plan) { rec in
            records.append(rec)
            writer?.emit(.record(rec))
            let v = judge.verdict(rec, release: header.kernelRelease, boot: header.cmdline.map(BootParams.init(cmdline:)) ?? .none)
            progress("[\(records.count)/\(plan.count)] \(rec.id): \(rec.outcome) \(v.kind.rawValue.uppercased())")
            injectFault(after: records.count)
        }
        progressDone()
        let hygiene = before.compare(after: HygieneSnapshot.take()) + engine.teardownChecks
        writer?.emit(.hygiene(hygiene))
        let report = judge.report(header: header, records: records, elapsed: Date().timeIntervalSince(start), hygiene: hygiene)
        writer?.emit(.end(exitCode: report.exitCode))
        try matrix.emit(report)
        throw ExitCode(report.exitCode)
    }
}

enum PCIDeviceName {
    static func describe(_ addr: String) -> String {
        guard let d = PCIDevice.lookup(addr) else { return addr }
        return "\(d.address) [\(d.vendor.dropFirst(2)):\(d.device.dropFirst(2))] group \(d.iommuGroup.map(String.init) ?? "?")"
    }
}

import VFIO
typealias PCIDevice = VFIO.PCIDevice
