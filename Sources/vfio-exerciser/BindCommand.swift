import ArgumentParser
import Exerciser
import Foundation

struct Bind: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bind a PCI device to vfio-pci, remembering its driver for `unbind`.")

    @Argument(help: "PCI address, e.g. 0000:03:00.0")
    var device: String

    @Flag(help: "Bind even if the device looks in use or its IOMMU group holds devices on host drivers.")
    var force = false

    func validate() throws {
        try validatePCIAddress(device, "device")
    }

    func run() throws {
        if let e = try Binding.bind(device, force: force) {
            print("\(e.device): \(e.originalDriver ?? "no driver") → vfio-pci (undo with `vfio-exerciser unbind \(e.device)`)")
        } else {
            print("\(device): already on vfio-pci")
        }
    }
}

struct Unbind: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Give devices bound by `bind` or `run --bind` back to their original drivers.")

    @Argument(help: "PCI address; omit with --all.")
    var device: String?

    @Flag(help: "Restore every device recorded in the state file (after a crash or kill).")
    var all = false

    /// Set by a run's signal handler: wait until that run is gone (it holds the device).
    @Option(help: .hidden)
    var afterPid: Int32?

    func validate() throws {
        if (device != nil) == all { throw ValidationError("give a PCI address or --all") }
        if let device { try validatePCIAddress(device, "device") }
        if let pid = afterPid, pid <= 0 { throw ValidationError("--after-pid \(pid) is not a process id") }
    }

    func run() throws {
        if let pid = afterPid {
            for _ in 0..<3000 where kill(pid, 0) == 0 || errno != ESRCH { usleep(10_000) }
        }
        let entries = Binding.load().filter { all || $0.device == PCIDevice.normalise(device ?? "") }
        if entries.isEmpty {
            print(all ? "nothing to restore" : "\(device!): not bound by vfio-exerciser")
            return
        }
        for e in entries {
            try Binding.restore(e)
            print("\(e.device): vfio-pci → \(e.originalDriver ?? "no driver")")
        }
    }
}
