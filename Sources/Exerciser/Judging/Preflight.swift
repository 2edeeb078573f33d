import Foundation

/// A kernel's .config, as `make` writes it (`CONFIG_X=y|m|value`, `# CONFIG_X is not set`).
public struct KernelConfig: Sendable, Equatable {
    public var options: [String: String]
    /// From the "# Linux/x86 6.1.176 Kernel Configuration" header, when there is one.
    public var version: KernelVersion?

    public init(text: String) {
        var o: [String: String] = [:]
        var v: KernelVersion?
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("CONFIG_"), let eq = line.firstIndex(of: "=") {
                o[String(line[line.index(line.startIndex, offsetBy: 7)..<eq])] = String(line[line.index(after: eq)...])
            } else if v == nil, line.hasPrefix("# Linux/"), line.hasSuffix("Kernel Configuration") {
                let words = line.split(separator: " ")
                if words.count > 2 { v = KernelVersion(release: String(words[2])) }
            }
        }
        options = o
        version = v
    }

    public func enabled(_ name: String) -> Bool { options[name] == "y" || options[name] == "m" }

    /// The running kernel's /proc/config.gz, unpacked by zcat (busybox has it in the guest).
    public static func running() -> String? {
        guard FileManager.default.fileExists(atPath: "/proc/config.gz") else { return nil }
        for zcat in ["/bin/zcat", "/usr/bin/zcat"] where FileManager.default.isExecutableFile(atPath: zcat) {
            let r = Subprocess.run([zcat, "/proc/config.gz"], timeout: 10)
            return r.error == nil && r.status == 0 ? String(decoding: r.stdout, as: UTF8.self) : nil
        }
        return nil
    }
}

/// Which options each group of rows needs, checked before any boot so that a kernel without
/// them is named at once ("CONFIG_IOMMUFD is not set: 100 cases will skip") rather than read
/// off a hundred SKIP lines afterwards.
public enum Preflight {
    public struct Requirement: Sendable {
        /// The group `--require` names.
        public var group: String
        /// Every one of these must be y or m…
        public var all: [String]
        /// …and at least one of these, when any are listed.
        public var any: [String] = []
        /// Options that appeared in this version (a kernel before it has the behaviour built in).
        public var since: [String: KernelVersion] = [:]
        public var what: String
        public var affects: @Sendable (PlannedCase) -> Bool
    }

    static func backends(_ b: BackendKind...) -> @Sendable (PlannedCase) -> Bool { { b.contains($0.backend) } }
    static func kinds(_ k: CaseKind...) -> @Sendable (PlannedCase) -> Bool { { k.contains($0.kind) } }

    public static let requirements: [Requirement] = [
        Requirement(group: "vfio", all: ["VFIO", "VFIO_PCI"], what: "VFIO and vfio-pci", affects: { _ in true }),
        // VFIO_CONTAINER came with iommufd's VFIO compatibility in 6.2 (Debian 6.1's config has no
        // such symbol; before it the container is always built).
        Requirement(group: "type1", all: ["VFIO_IOMMU_TYPE1", "VFIO_CONTAINER"], since: ["VFIO_CONTAINER": KernelVersion(6, 2)],
                    what: "the type1 container", affects: backends(.type1, .type1v2, .mdevMap, .mdevPin)),
        Requirement(group: "iommu", all: ["INTEL_IOMMU"], what: "the Intel IOMMU the test VM emulates",
                    affects: backends(.type1, .type1v2, .iommufdCompatType1, .iommufdCompatType1v2, .iommufd)),
        Requirement(group: "iommufd", all: ["IOMMUFD"], what: "iommufd",
                    affects: backends(.iommufdCompatType1, .iommufdCompatType1v2, .iommufd)),
        Requirement(group: "iommufd", all: ["IOMMUFD_VFIO_CONTAINER"], what: "/dev/vfio/vfio served by iommufd",
                    affects: backends(.iommufdCompatType1, .iommufdCompatType1v2)),
        Requirement(group: "iommufd", all: ["VFIO_DEVICE_CDEV"], what: "VFIO device cdevs", affects: backends(.iommufd)),
        Requirement(group: "mdev", all: ["VFIO_MDEV"], what: "mediated devices", affects: backends(.mdevMap, .mdevPin)),
        // The test module (mixedmap kinds, mdev-pin) is built out of tree and loaded.
        Requirement(group: "module", all: ["MODULES"], what: "loadable modules (the test module)",
                    affects: { [.mixedmapSpecial, .mixedmapPage].contains($0.kind) || $0.backend == .mdevPin }),
        Requirement(group: "hugetlb", all: ["HUGETLBFS"], what: "hugetlbfs",
                    affects: kinds(.hugetlb2M, .hugetlb1G, .memfdHugetlb2M, .memfdHugetlbMapFile)),
        Requirement(group: "thp", all: ["TRANSPARENT_HUGEPAGE"], what: "transparent huge pages", affects: kinds(.thp)),
        Requirement(group: "fs", all: ["BLK_DEV_RAM"], any: ["EXT2_FS", "EXT4_FS"], what: "an ext2/ext4 file system on a RAM disk",
                    affects: kinds(.fsFile)),
        Requirement(group: "secretmem", all: ["SECRETMEM"], what: "memfd_secret()", affects: kinds(.memfdSecret)),
        Requirement(group: "dax", all: ["X86_PMEM_LEGACY", "BLK_DEV_PMEM", "FS_DAX"], what: "fsdax on legacy pmem",
                    affects: kinds(.fsdaxFile)),
        Requirement(group: "dax", all: ["X86_PMEM_LEGACY", "DEV_DAX", "DEV_DAX_PMEM"], what: "device-dax on legacy pmem",
                    affects: kinds(.devdax)),
        Requirement(group: "p2p", all: ["PCI_P2PDMA", "DMA_SHARED_BUFFER"], what: "vfio-pci dma-buf export",
                    affects: kinds(.peerBarDmabuf)),
    ]

    public static var groups: [String] {
        var g: [String] = []
        for r in requirements where !g.contains(r.group) { g.append(r.group) }
        return g
    }

    public struct Finding: Equatable, Sendable {
        public var group: String
        public var missing: [String]
        public var what: String
        public var cases: Int
        public var line: String {
            let opts = missing.map { "CONFIG_\($0)" }
            return "\(opts.joined(separator: ", ")) \(opts.count == 1 ? "is" : "are") not set (\(what)): "
                + "\(cases) case\(cases == 1 ? "" : "s") will skip"
        }
    }

    /// What `config` lacks, each with the number of planned cases it takes away (0: the option
    /// is missing but nothing planned needs it; still said, it is not counted as a failure).
    public static func check(_ config: KernelConfig, plan: [PlannedCase]) -> [Finding] {
        var out: [Finding] = []
        for r in requirements {
            var missing = r.all.filter { o in
                if config.enabled(o) { return false }
                if let since = r.since[o], let v = config.version, v < since, config.options[o] == nil { return false }
                return true
            }
            if !r.any.isEmpty && !r.any.contains(where: config.enabled) { missing.append(r.any.joined(separator: "|")) }
            guard !missing.isEmpty else { continue }
            out.append(Finding(group: r.group, missing: missing, what: r.what, cases: plan.filter(r.affects).count))
        }
        return out
    }

    /// `--require`: each named group must have nothing missing; the error names what is.
    public static func require(_ groups: [String], findings: [Finding], kernel: String) throws(UsageError) {
        for g in groups where !Self.groups.contains(g) {
            throw UsageError("--require \(g): no such group (groups: \(Self.groups.joined(separator: ", ")))")
        }
        let bad = findings.filter { groups.contains($0.group) }
        if !bad.isEmpty {
            throw UsageError("\(kernel): " + bad.map(\.line).joined(separator: "; "))
        }
    }
}
