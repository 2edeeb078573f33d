import CVFIO
import Foundation
import SystemPackage
import VFIO

public struct RunOptions {
    public var device: String
    public var fsDir = "/mnt/fs"
    public var tmpfsDir = "/dev/shm"
    public var fsdaxDir = "/mnt/dax"
    public var devdax: String?
    /// A second device bound to vfio-pci whose BAR0 the device under test DMAs into (peer-bar).
    public var peer: String?
    /// More edu devices bound to vfio-pci: their DMA engines run a data check's transfers
    /// alongside the device's own (the peer's too, when it is an edu).
    public var helpers: [String] = []
    public var dataCheck = true
    /// Test hooks ("wrong-iova": data checks aim at the wrong IOVA and must report a mismatch).
    public var inject: String?
    /// Each case in a forked child, so a crash or hang loses that case only.
    public var isolate = true
    public var caseTimeout: Double = 120
    public init(device: String) { self.device = device }
}

func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Runs planned cases against one device; `sink` gets each record the moment it is final.
public final class Engine {
    let options: RunOptions
    let pci: PCIDevice
    let group: Int
    /// One check per backend that ran: its session tore down as it should (the bytes the
    /// scratch unmap reported among them). Hygiene, like the leftovers after the run.
    public private(set) var teardownChecks: [Check] = []

    /// Validates the device before anything is opened: exit-2 problems surface here.
    public init(options: RunOptions) throws(UsageError) {
        self.options = options
        guard let pci = PCIDevice.lookup(options.device) else {
            throw UsageError("no PCI device \(options.device) (see /sys/bus/pci/devices)")
        }
        guard pci.driver == "vfio-pci" else {
            throw UsageError("\(pci.address) is bound to \(pci.driver ?? "no driver"), not vfio-pci (bind it with driver_override)")
        }
        guard let group = pci.iommuGroup else {
            throw UsageError("\(pci.address) has no IOMMU group (is the IOMMU enabled? intel_iommu=on)")
        }
        guard FileManager.default.fileExists(atPath: "/dev/vfio/vfio") || FileManager.default.fileExists(atPath: "/dev/iommu") else {
            throw UsageError("neither /dev/vfio/vfio nor /dev/iommu exists (modprobe vfio-pci)")
        }
        self.pci = pci
        self.group = group
    }

    public func run(_ plan: [PlannedCase], sink: (CaseRecord) -> Void) throws(UsageError) {
        for backend in BackendKind.allCases {
            let cases = plan.filter { $0.backend == backend }
            if cases.isEmpty { continue }
            try runBackend(backend, cases, sink: sink)
        }
    }

    func runBackend(_ backend: BackendKind, _ cases: [PlannedCase], sink: (CaseRecord) -> Void) throws(UsageError) {
        let session: Session
        do {
            session = try Session(backend: backend, group: group, options: options, pci: pci)
        } catch let e as UsageError {
            throw e
        } catch let e as BackendUnavailable {
            for c in cases { sink(Runner.record(c, iova: 0, outcome: .skip(e.reason))) }
            return
        } catch {
            throw UsageError("\(backend.rawValue): \(error)")
        }
        defer {
            session.close()
            let p = session.teardownProblems
            teardownChecks.append(Check("teardown-\(backend.rawValue)", p.isEmpty, p.isEmpty ? "scratch and devices released" : p.joined(separator: "; ")))
        }
        for (i, c) in cases.enumerated() {
            if c.phase == .device && !session.deviceOpen {
                do { try session.openDevice() } catch {
                    // Without the device no device-phase case can run: each says why.
                    for rest in cases[i...] { sink(Runner.record(rest, iova: 0, outcome: .skip("device open failed: \(error)"))) }
                    return
                }
            }
            sink(runCase(c, index: i, session: session))
        }
    }

    /// Runs one case and adds what only the parent can see: the kernel log, mappings left in
    /// the container, and — when the case died — the clean-up of its IOVA window.
    func runCase(_ c: PlannedCase, index: Int, session: Session) -> CaseRecord {
        let start = monotonicNanos()
        let availBefore = session.dmaAvail()
        _ = session.kmsg?.drain()  // whatever came before belongs to no case
        let knobs = CaseKnobs.snapshot(c)  // events (issue 13): module params the case may change
        var rec: CaseRecord
        if options.isolate {
            rec = Isolation.run(c, index: index, session: session, timeout: options.caseTimeout)
        } else {
            rec = Runner(session: session, planned: c, index: index).run()
        }
        rec.checks += CaseKnobs.restore(knobs)
        rec.caseNanos = monotonicNanos() - start
        if let log = session.kmsg?.drain() {
            rec.kernelLog = KernelLog.relevant(log)
            for line in KernelLog.fatalLines(log) { rec.checks.append(Check("kernel-log", false, line)) }
        }
        // Every case must leave the container as it found it.
        if let before = availBefore, let after = session.dmaAvail() {
            rec.checks.append(Check("mappings-left", before == after,
                                    before == after ? "dma_avail back to \(after)" : "dma_avail \(before) before, \(after) after"))
        }
        return rec
    }
}

