import Foundation

/// Reads the Intel IOMMU's page-table dump (CONFIG_INTEL_IOMMU_DEBUGFS) to tell at which
/// level an IOVA is mapped. Kernels without the option, or other IOMMUs, give nil.
enum IOMMUDebugfs {
    static let root = "/sys/kernel/debug/iommu/intel"

    static func dumpPaths(device: String) -> [String] {
        ["\(root)/\(device)/domain_translation_struct", "\(root)/domain_translation_struct"]
    }

    static func pageSize(device: String, iova: UInt64) -> String? {
        for p in dumpPaths(device: device) {
            guard let text = readProcFile(p), !text.isEmpty else { continue }
            return parse(text, iova: iova) ?? "raw: " + text.split(whereSeparator: \.isNewline).prefix(4).joined(separator: " | ")
        }
        return nil
    }

    static func parse(_ text: String, iova: UInt64) -> String? { nil }
}
