import Foundation

/// sysfs facts about a PCI device (no ioctls).
public struct PCIDevice: Sendable, Equatable, Codable {
    public var address: String
    public var vendor: String
    public var device: String
    public var driver: String?
    public var iommuGroup: Int?

    public static let sysfs = "/sys/bus/pci/devices"

    /// Normalises "00:03.0" to "0000:00:03.0".
    public static func normalise(_ addr: String) -> String {
        addr.split(separator: ":").count == 2 ? "0000:" + addr : addr
    }

    public static func lookup(_ addr: String) -> PCIDevice? {
        let a = normalise(addr)
        let dir = "\(sysfs)/\(a)"
        guard FileManager.default.fileExists(atPath: dir) else { return nil }
        func read(_ f: String) -> String {
            ((try? String(contentsOfFile: "\(dir)/\(f)", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let driver = (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(dir)/driver")).map { ($0 as NSString).lastPathComponent }
        let group = (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(dir)/iommu_group")).flatMap { Int(($0 as NSString).lastPathComponent) }
        return PCIDevice(address: a, vendor: read("vendor"), device: read("device"), driver: driver, iommuGroup: group)
    }

    public static func all() -> [PCIDevice] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: sysfs)) ?? []
        return names.sorted().compactMap(lookup)
    }

    /// Devices sharing an IOMMU group, from /sys/kernel/iommu_groups/N/devices.
    public static func groupMembers(_ group: Int) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/kernel/iommu_groups/\(group)/devices")) ?? []).sorted()
    }
}
