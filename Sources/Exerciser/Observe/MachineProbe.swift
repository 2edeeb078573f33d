import CVFIO
import Foundation
import VFIO

/// `probe`: what this machine offers, read without changing anything.
public struct MachineProbe: Codable {
    public struct GroupFacts: Codable {
        public var group: Int
        public var devices: [PCIDevice]
        public var viable: Bool?
        public var iommu: IOMMUInfo?
        public var note: String?
    }

    public var kernel: String
    public var vfioContainer: Bool
    /// What answers on /dev/vfio/vfio: the VFIO type1 container, or iommufd's emulation of it.
    public var vfioContainerBackend: String?
    public var devIOMMU: Bool
    public var vfioCdevs: [String]
    public var extensions: [String: Bool]
    public var groups: [GroupFacts]
    public var hugepages: [String: String]
    public var thp: String?
    public var rlimitMemlock: String
    public var iommufdHeader: Bool

    static func read(_ path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public static func collect() -> MachineProbe {
        let fm = FileManager.default
        var ext: [String: Bool] = [:]
        let container = try? Container()
        var backend: String?
        if let c = container {
            backend = Self.containerBackend(c)
            for (name, v) in [("type1", VFIO_TYPE1_IOMMU), ("type1v2", VFIO_TYPE1v2_IOMMU), ("unmap-all", VFIO_UNMAP_ALL),
                              ("update-vaddr", VFIO_UPDATE_VADDR), ("noiommu", VFIO_NOIOMMU_IOMMU)] {
                ext[name] = c.checkExtension(v)
            }
        }
        container?.close()
        var groups: [GroupFacts] = []
        let groupNames = (try? fm.contentsOfDirectory(atPath: "/sys/kernel/iommu_groups")) ?? []
        for g in groupNames.compactMap(Int.init).sorted() {
            let devs = PCIDevice.groupMembers(g).compactMap(PCIDevice.lookup)
            var facts = GroupFacts(group: g, devices: devs)
            if !devs.isEmpty && devs.allSatisfy({ $0.driver == "vfio-pci" }) {
                facts.note = "all devices on vfio-pci"
                // Attach briefly to read page sizes and IOVA ranges; everything closes on return.
                if let c = try? Container(), let grp = try? Group(number: g) {
                    facts.viable = (try? grp.status())?.viable
                    if (try? grp.setContainer(c)) != nil, (try? c.setIOMMU(.type1v2)) != nil {
                        facts.iommu = try? c.info().get()
                    }
                    grp.close()
                    c.close()
                }
            }
            groups.append(facts)
        }
        var huge: [String: String] = [:]
        for h in ((try? fm.contentsOfDirectory(atPath: "/sys/kernel/mm/hugepages")) ?? []).sorted() {
            let base = "/sys/kernel/mm/hugepages/\(h)"
            huge[h] = "nr=\(read(base + "/nr_hugepages") ?? "?") free=\(read(base + "/free_hugepages") ?? "?")"
        }
        var rl = rlimit()
        getrlimit(__rlimit_resource_t(8), &rl)  // RLIMIT_MEMLOCK
        let memlock = rl.rlim_cur == rlim_t.max ? "unlimited" : formatSize(UInt64(rl.rlim_cur))
        let cdevs = ((try? fm.contentsOfDirectory(atPath: "/dev/vfio/devices")) ?? []).sorted()
        return MachineProbe(kernel: kernelRelease(), vfioContainer: fm.fileExists(atPath: "/dev/vfio/vfio"), vfioContainerBackend: backend,
                            devIOMMU: fm.fileExists(atPath: "/dev/iommu"), vfioCdevs: cdevs, extensions: ext, groups: groups,
                            hugepages: huge, thp: read("/sys/kernel/mm/transparent_hugepage/enabled"),
                            rlimitMemlock: memlock, iommufdHeader: cvfio_have_iommufd_header != 0)
    }

    /// iommufd serves its own ioctls on the fd it hands out as /dev/vfio/vfio
    /// (CONFIG_IOMMUFD_VFIO_CONTAINER): IOMMU_DESTROY of object 0 finds no such object (ENOENT).
    /// The real container, with no IOMMU set, refuses any ioctl it does not know (EINVAL).
    static func containerBackend(_ c: Container) -> String? {
        #if IOMMUFD_UAPI
        var d = iommu_destroy()
        d.id = 0
        switch Sys.ioctl(c.fd, CVFIO_IOMMU_DESTROY, &d, argsz: \.size) {
        case .failure(.noSuchFileOrDirectory): return "iommufd (CONFIG_IOMMUFD_VFIO_CONTAINER)"
        default: return "vfio (vfio_iommu_type1)"
        }
        #else
        return nil
        #endif
    }

    public var text: String {
        var s = "kernel            \(kernel)\n"
        s += "/dev/vfio/vfio    \(vfioContainer ? "present" + (vfioContainerBackend.map { ", served by \($0)" } ?? "") : "missing (modprobe vfio-pci)")\n"
        s += "/dev/iommu        \(devIOMMU ? "present" : "missing (kernel without CONFIG_IOMMUFD)")\n"
        s += "vfio cdevs        \(vfioCdevs.isEmpty ? "none" : vfioCdevs.joined(separator: " "))\n"
        s += "extensions        \(extensions.isEmpty ? "(no container)" : extensions.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value ? "yes" : "no")" }.joined(separator: " "))\n"
        s += "hugepages         \(hugepages.isEmpty ? "none" : hugepages.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))\n"
        s += "THP               \(thp ?? "unsupported")\n"
        s += "RLIMIT_MEMLOCK    \(rlimitMemlock)\n"
        s += "IOMMU groups      \(groups.isEmpty ? "none (no IOMMU, or intel_iommu=off)" : "\(groups.count)")\n"
        for g in groups {
            s += "  group \(g.group):"
            for d in g.devices { s += " \(d.address) [\(d.vendor.dropFirst(2)):\(d.device.dropFirst(2))] \(d.driver ?? "no driver");" }
            if let i = g.iommu {
                s += "\n    page sizes 0x\(String(i.pageSizes, radix: 16)), IOVA ranges "
                s += i.iovaRanges.map { "0x\(String($0.start, radix: 16))-0x\(String($0.end, radix: 16))" }.joined(separator: " ")
                if let a = i.dmaAvail { s += ", dma_avail \(a)" }
            }
            s += "\n"
        }
        return s
    }
}
