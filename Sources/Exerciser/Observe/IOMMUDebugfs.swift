import Foundation

/// Reads the Intel IOMMU's page-table dump (CONFIG_INTEL_IOMMU_DEBUGFS) to tell at which level
/// an IOVA is mapped. Kernels without the option (Debian's), or other IOMMUs, give nil.
enum IOMMUDebugfs {
    static let root = "/sys/kernel/debug/iommu/intel"

    static func dumpPaths(device: String) -> [String] {
        ["\(root)/\(device)/domain_translation_struct", "\(root)/domain_translation_struct"]
    }

    static func pageSize(device: String, iova: UInt64) -> String? {
        for p in dumpPaths(device: device) {
            guard let text = readProcFile(p), !text.isEmpty else { continue }
            return parse(text, iova: iova) ?? "not in the dump"
        }
        return nil
    }

    /// Lines are "IOVA_PFN | PML5E PML4E PDPE PDE PTE" with as many entries as levels walked to
    /// the leaf (the 5-level columns come first, zero on 4-level tables): 3 entries end at the
    /// PDPE (1G page), 4 at the PDE (2M), 5 at the PTE (4K).
    static func parse(_ text: String, iova: UInt64) -> String? {
        let pfn = iova >> 12
        for line in text.split(whereSeparator: \.isNewline) {
            let halves = line.split(separator: "|", maxSplits: 1)
            guard halves.count == 2 else { continue }
            let key = halves[0].trimmingCharacters(in: .whitespaces)
            guard key.hasPrefix("0x"), UInt64(key.dropFirst(2), radix: 16) == pfn else { continue }
            let entries = halves[1].split(whereSeparator: { $0 == " " || $0 == "\t" }).count
            switch entries {
            case 3: return "1G"
            case 4: return "2M"
            case 5: return "4K"
            default: return "unknown (\(entries) levels)"
            }
        }
        return nil
    }
}
