import CVFIO
import Foundation
import VFIO
import SystemPackage

/// Moves a PCI device to vfio-pci through driver_override and back, remembering on disk what it
/// was bound to, so a run killed in any way can be undone by the next `unbind --all`.
public enum Binding {
    public struct Entry: Codable, Equatable {
        public var device: String
        /// The driver to give the device back to; nil when it had none.
        public var originalDriver: String?
        public var pid: Int32
    }

    public static var stateDir: String {
        ProcessInfo.processInfo.environment["VFIO_EXERCISER_STATE"] ?? "/run/vfio-exerciser"
    }
    static var stateFile: String { stateDir + "/bindings.json" }

    public static func load() -> [Entry] {
        guard let d = FileManager.default.contents(atPath: stateFile) else { return [] }
        return (try? JSONDecoder().decode([Entry].self, from: d)) ?? []
    }

    static func save(_ entries: [Entry]) throws(UsageError) {
        do {
            try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
            let data = try JSONEncoder().encode(entries)
            try data.write(to: URL(fileURLWithPath: stateFile), options: .atomic)
        } catch {
            throw UsageError("cannot write \(stateFile): \(error.localizedDescription)")
        }
    }

    static func write(_ path: String, _ value: String) throws(UsageError) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw UsageError("cannot open \(path): \(Errno(rawValue: errno).symbol)" + (errno == EACCES ? " (run as root)" : "")) }
        defer { close(fd) }
        let n = value.withCString { Glibc.write(fd, $0, strlen($0)) }
        guard n >= 0 else { throw UsageError("writing \(value.trimmingCharacters(in: .whitespacesAndNewlines)) to \(path): \(Errno(rawValue: errno).symbol)") }
    }

    /// Why a device should not be taken from its driver: an interface that is up, a mounted,
    /// swapped-on or held block device. Heuristic, as in the kernel selftests' setup scripts.
    static func inUse(_ dev: PCIDevice) -> String? {
        let dir = "\(PCIDevice.sysfs)/\(dev.address)"
        for ifname in (try? FileManager.default.contentsOfDirectory(atPath: dir + "/net")) ?? [] {
            let state = (try? String(contentsOfFile: "\(dir)/net/\(ifname)/operstate", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            if state == "up" { return "network interface \(ifname) is up" }
        }
        return blockInUse(deviceDir: dir, sysBlock: "/sys/block", mountinfo: readProcFile("/proc/self/mountinfo") ?? "",
                          swaps: readProcFile("/proc/swaps") ?? "")
    }

    /// The block devices below a PCI device (SCSI disks, NVMe namespaces, also the multipath
    /// head /sys/block/nvmeXnY of a hidden path nvmeXcZnY), their partitions and what holds them
    /// (dm, md), checked by device number against mountinfo: /dev/root and /dev/mapper names
    /// need no path matching.
    static func blockInUse(deviceDir dir: String, sysBlock: String, mountinfo: String, swaps: String) -> String? {
        let fm = FileManager.default
        func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var names: [String] = []
        if let e = fm.enumerator(atPath: dir) {
            for case let path as String in e {
                let parts = path.split(separator: "/").map(String.init)
                guard let name = parts.last else { continue }
                if parts.count >= 2 && parts[parts.count - 2] == "block" { names.append(name) }
                if name.range(of: #"^nvme[0-9]+(c[0-9]+)?n[0-9]+$"#, options: .regularExpression) != nil {
                    names.append(name.replacingOccurrences(of: #"c[0-9]+n"#, with: "n", options: .regularExpression))
                }
            }
        }
        // Each disk, its partitions, and recursively whatever holds any of them.
        var seen = Set<String>()
        var queue = names
        var numbers: [String: String] = [:]  // "major:minor" → name
        while let n = queue.popLast() {
            // Partitions are found below their disk, not here.
            let base = "\(sysBlock)/\(n)"
            guard seen.insert(n).inserted, fm.fileExists(atPath: base) else { continue }
            if let d = read("\(base)/dev") { numbers[d] = n }
            for entry in (try? fm.contentsOfDirectory(atPath: base)) ?? [] where entry.hasPrefix(n) {
                queue.append(entry)  // partition
                if let d = read("\(base)/\(entry)/dev") { numbers[d] = entry }
                queue += (try? fm.contentsOfDirectory(atPath: "\(base)/\(entry)/holders")) ?? []
            }
            queue += (try? fm.contentsOfDirectory(atPath: "\(base)/holders")) ?? []
        }
        for line in mountinfo.split(whereSeparator: \.isNewline) {
            let f = line.split(separator: " ")
            if f.count > 4, let n = numbers[String(f[2])] { return "block device \(n) is mounted on \(f[4])" }
        }
        for line in swaps.split(whereSeparator: \.isNewline).dropFirst() {
            guard let path = line.split(separator: " ").first else { continue }
            let name = (String(path) as NSString).lastPathComponent
            if seen.contains(name) { return "block device \(name) is in use as swap" }
        }
        return nil
    }

    /// Binds `address` to vfio-pci. Returns the entry to restore, or nil if it already was.
    @discardableResult
    public static func bind(_ address: String, force: Bool) throws(UsageError) -> Entry? {
        guard let dev = PCIDevice.lookup(address) else { throw UsageError("no PCI device \(address)") }
        if dev.driver == "vfio-pci" { return nil }
        if !force {
            if let why = inUse(dev) { throw UsageError("\(dev.address) is in use by \(dev.driver ?? "?") (\(why)); use --force") }
            if let g = dev.iommuGroup {
                let others = PCIDevice.groupMembers(g).filter { $0 != dev.address }.compactMap(PCIDevice.lookup)
                    .filter { $0.driver != nil && $0.driver != "vfio-pci" && $0.driver != "pcieport" }
                if !others.isEmpty {
                    throw UsageError("IOMMU group \(g) of \(dev.address) also holds " +
                                     others.map { "\($0.address) (\($0.driver!))" }.joined(separator: ", ") + "; use --force")
                }
            }
        }
        if !FileManager.default.fileExists(atPath: "/sys/bus/pci/drivers/vfio-pci") {
            _ = try? VMHarness.sh(["modprobe", "vfio-pci"])
            guard FileManager.default.fileExists(atPath: "/sys/bus/pci/drivers/vfio-pci") else {
                throw UsageError("vfio-pci driver not available (modprobe vfio-pci failed)")
            }
        }
        let entry = Entry(device: dev.address, originalDriver: dev.driver, pid: getpid())
        // On disk first: whatever happens next, `unbind --all` can undo it.
        try save(load().filter { $0.device != dev.address } + [entry])
        let dir = "\(PCIDevice.sysfs)/\(dev.address)"
        do {
            try write(dir + "/driver_override", "vfio-pci")
            if let d = dev.driver { try write("/sys/bus/pci/drivers/\(d)/unbind", dev.address) }
            try write("/sys/bus/pci/drivers_probe", dev.address)
        } catch {
            _ = try? restore(entry)
            throw error
        }
        guard PCIDevice.lookup(dev.address)?.driver == "vfio-pci" else {
            _ = try? restore(entry)
            throw UsageError("\(dev.address) did not bind to vfio-pci (see dmesg)")
        }
        return entry
    }

    /// Gives the device back to its original driver (or none) and forgets the entry.
    public static func restore(_ e: Entry) throws(UsageError) {
        let dir = "\(PCIDevice.sysfs)/\(e.device)"
        guard FileManager.default.fileExists(atPath: dir) else {
            try save(load().filter { $0.device != e.device })
            return
        }
        try write(dir + "/driver_override", "\n")
        if PCIDevice.lookup(e.device)?.driver == "vfio-pci" { try write("/sys/bus/pci/drivers/vfio-pci/unbind", e.device) }
        if let d = e.originalDriver {
            if (try? write("/sys/bus/pci/drivers/\(d)/bind", e.device)) == nil { try write("/sys/bus/pci/drivers_probe", e.device) }
        }
        let now = PCIDevice.lookup(e.device)?.driver
        guard now == e.originalDriver else {
            throw UsageError("\(e.device) is on \(now ?? "no driver") after restore, expected \(e.originalDriver ?? "no driver")")
        }
        try save(load().filter { $0.device != e.device })
    }

    /// For the duration of a run: arm the signal-safe restore; the caller restores on exit.
    public static func armSignals(_ e: Entry) {
        cvfio_binding_arm(e.device)
        cvfio_binding_install_handlers()
    }

    public static func disarm() { cvfio_binding_disarm() }
}
