import Foundation
import VFIO

/// On a boot with a ZONE_MOVABLE (movablecore=), a long-term pin must first migrate each page
/// out of it (d1e153fea2a8, 5.13, check_and_migrate_movable_pages): where the pages were before
/// the map and after it, and a check that no pinned page is left there.
enum MovableCheck {
    /// Kinds whose pages are ordinary struct-page memory the pin may migrate (not BARs,
    /// special PTEs, or device-dax, whose ZONE_DEVICE pages only lie in Movable's span).
    static let kinds: Set<CaseKind> = [.anonPrivate, .anonUntouched, .anonShared, .memfd, .memfdHugetlb2M, .hugetlb2M, .hugetlb1G,
                                       .thp, .tmpfsFile, .fsFile, .mlocked, .mixedmapPage, .memfdMapFile, .memfdHugetlbMapFile]

    /// The zones, when this case should be checked: a pinning backend, such a kind, a Movable zone.
    static func zones(for c: PlannedCase, zoneinfo: String? = readProcFile("/proc/zoneinfo")) -> [PageInfo.Zone]? {
        guard c.backend != .mdevMap, kinds.contains(c.kind) else { return nil }
        let z = PageInfo.zones(zoneinfo)
        return z.contains { $0.name == "Movable" && $0.spanned > 0 } ? z : nil
    }

    /// Base pages per folio: the kernel decides by the folio's zone, which is its head page's.
    static func stride(_ k: CaseKind) -> Int {
        switch k {
        case .hugetlb1G: return (1 << 30) / PageSize.base
        case .hugetlb2M, .memfdHugetlb2M, .memfdHugetlbMapFile, .thp: return (2 << 20) / PageSize.base
        default: return 1
        }
    }

    /// Adds pages_before_map, pages_pinned, moved_at_pin and the pinned-outside-movable check
    /// over the folios of the first `pinned` pages (mdev-pin pins a prefix), and for huge folios
    /// folio-in-one-zone: a boot-time gigantic page from memblock can span the Normal/Movable
    /// boundary, and the kernel then judges the whole folio by its head page.
    static func record(_ rec: inout CaseRecord, vaddr: UInt64, before: [UInt64?], pinned: Int, zones: [PageInfo.Zone], stride: Int = 1) {
        let after = PageInfo.pfns(vaddr, pages: before.count)
        rec.properties["pages_before_map"] = summary(before, zones)
        rec.properties["pages_pinned"] = summary(after, zones)
        rec.properties["moved_at_pin"] = "\(PageInfo.moved(before, after)) of \(before.count) pages"
        rec.checks += checks(after, pinned: pinned, zones: zones, stride: stride)
    }

    /// pinned-outside-movable over the folios of the first `pinned` pages and, for huge folios,
    /// folio-in-one-zone. Pages not present never count as Movable.
    static func checks(_ after: [UInt64?], pinned: Int, zones: [PageInfo.Zone], stride: Int) -> [Check] {
        let folios = stride > 1 ? Swift.stride(from: 0, to: min(pinned, after.count), by: stride).map { Array(after[$0..<min($0 + stride, after.count)]) }
                                : after.prefix(pinned).map { [$0] }
        let zone = { (p: UInt64?) in p.map { PageInfo.zone(of: $0, in: zones) } }
        let left = folios.filter { zone($0.first ?? nil) == "Movable" }.count
        let straddling = folios.filter { Set($0.compactMap(zone)).count > 1 }.count
        let what = stride > 1 ? "folios (by their head page)" : "pages"
        var out = [Check("pinned-outside-movable", left == 0, left == 0 ? "no pinned \(stride > 1 ? "folio" : "page") is in ZONE_MOVABLE"
                         : "\(left) of \(folios.count) pinned \(what) are in ZONE_MOVABLE (d1e153fea2a8 migrates them out)")]
        if stride > 1 {
            out.append(Check("folio-in-one-zone", straddling == 0, straddling == 0 ? "every pinned folio lies in one zone"
                             : "\(straddling) of \(folios.count) pinned folios have pages in two zones: \(summary(after, zones))"))
        }
        return out
    }

    /// "Movable×12 Normal×4" (pages not present are counted as such).
    static func summary(_ pfns: [UInt64?], _ zones: [PageInfo.Zone]) -> String {
        var counts: [String: Int] = [:]
        for x in pfns { counts[x.map { PageInfo.zone(of: $0, in: zones) } ?? "not present", default: 0] += 1 }
        return counts.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
    }
}
