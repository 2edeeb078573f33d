import CVFIO
import Foundation
import SystemPackage
import VFIO

/// What `bench` measures and how often.
public struct BenchOptions {
    public var device: String
    public var backends: [BackendKind] = BenchOptions.defaultBackends
    public var kinds: [CaseKind] = BenchOptions.defaultKinds
    public var sizes: [UInt64] = BenchOptions.defaultSizes
    public var repetitions = 20
    public var warmup = 2
    public var minRepetitions = 5
    public var budgetSeconds = 2.0
    /// The IOVA every point maps at (the C helper uses the same).
    public var iova: UInt64 = 1 << 32
    /// bench/map_bench built static: run after each backend's session, compared per call.
    public var cHelper: String?
    public var fsDir = "/mnt/fs"
    public var tmpfsDir = "/dev/shm"
    public var fsdaxDir = "/mnt/dax"
    public var devdax: String?

    public init(device: String) { self.device = device }

    public static let defaultKinds: [CaseKind] = [.anonPrivate, .memfd, .hugetlb2M, .hugetlb1G, .thp, .bar]
    public static let defaultSizes: [UInt64] = [4 << 10, 64 << 10, 1 << 20, 2 << 20, 16 << 20, 128 << 20, 1 << 30]
    /// The container backends (the C helper speaks these two).
    public static var defaultBackends: [BackendKind] { BackendKind.allCases.filter { ["type1", "type1v2"].contains($0.rawValue) } }

    /// What bench/map_bench speaks: the container backends (the iommufd cdev path is not in it).
    public static let cHelperBackends = ["type1", "type1v2", "iommufd-compat-type1", "iommufd-compat-type1v2"]

    /// Kinds whose region has a size of our choosing and is meant to map.
    public static func benchable(_ k: CaseKind) -> Bool {
        !k.isEdge && Backings.backing(for: k) != nil && k != .barPlusAnon
    }

    public func validate() throws(UsageError) {
        for k in kinds where !Self.benchable(k) {
            throw UsageError("bench cannot measure \(k.rawValue) (argument edges and bar-plus-anon have no size to sweep)")
        }
        for s in sizes where s == 0 || s % 4096 != 0 {
            throw UsageError("bench size \(formatSize(s)) is not a positive multiple of 4K")
        }
        if repetitions < 1 { throw UsageError("--repetitions must be at least 1") }
        if warmup < 0 { throw UsageError("--warmup must not be negative") }
        if minRepetitions < 1 { throw UsageError("--min-repetitions must be at least 1") }
        if !(budgetSeconds >= 0) { throw UsageError("--budget must not be negative") }
        if iova % (1 << 30) != 0 { throw UsageError("--iova must be 1 GiB aligned") }
        if backends.isEmpty || kinds.isEmpty || sizes.isEmpty { throw UsageError("nothing to measure") }
    }

    /// The sizes a kind is measured at: hugetlb and THP in whole huge pages, BARs up to their size.
    public static func sizes(for kind: CaseKind, from sizes: [UInt64], barSize: UInt64?) -> [UInt64] {
        let sorted = Array(Set(sizes)).sorted()
        switch kind {
        case .hugetlb1G: return sorted.filter { $0 % (1 << 30) == 0 }
        case .hugetlb2M, .memfdHugetlb2M, .thp: return sorted.filter { $0 % (2 << 20) == 0 }
        case .bar:
            guard let b = barSize else { return [0] }  // one point, skipped: no BAR
            let fit = sorted.filter { $0 <= b }
            return fit.isEmpty ? [b] : fit
        default: return sorted
        }
    }

    var settings: BenchSettings {
        BenchSettings(backends: backends.map(\.rawValue), kinds: kinds.map(\.rawValue), sizes: Array(Set(sizes)).sorted(),
                      repetitions: repetitions, warmup: warmup, minRepetitions: min(minRepetitions, repetitions),
                      budgetSeconds: budgetSeconds, iova: iova)
    }
}

public struct BenchPlanEntry: Equatable, Sendable {
    public var backend: BackendKind
    public var kind: CaseKind
    public var size: UInt64
}

/// The bench stream (a serial port in the VM).
final class BenchStreamWriter {
    let out: LineWriter
    init(path: String) throws(UsageError) { out = try LineWriter(path: path) }
    func emit(_ e: BenchEvent) { out.write(e.line) }
}

/// Measures VFIO_IOMMU_MAP_DMA / UNMAP_DMA per region kind and size on a device bound to vfio-pci.
/// Each region is built once per (kind, size) and mapped and unmapped at one IOVA, each call
/// timed alone with CLOCK_MONOTONIC; bench/map_bench.c repeats the anon-private loop in C.
public final class BenchRunner {
    public let options: BenchOptions
    let pci: PCIDevice
    let group: Int
    var streamWriter: BenchStreamWriter?

    public init(options: BenchOptions, stream: String? = nil) throws(UsageError) {
        try options.validate()
        let engine = try Engine(options: RunOptions(device: options.device))  // the same device checks as `run`
        self.options = options
        pci = engine.pci
        group = engine.group
        if let s = stream { streamWriter = try BenchStreamWriter(path: s) }
    }

    /// First mmappable memory BAR and its size, from sysfs (no device open needed).
    static func memoryBARSize(pciAddress: String) -> UInt64? {
        let path = "\(PCIDevice.sysfs)/\(PCIDevice.normalise(pciAddress))/resource"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(whereSeparator: \.isNewline).prefix(6) {
            let f = line.split(separator: " ").compactMap { UInt64($0.dropFirst(2), radix: 16) }
            guard f.count == 3, f[1] > f[0], f[2] & 0x200 != 0 else { continue }
            return f[1] - f[0] + 1
        }
        return nil
    }

    /// Every point in measuring order: per backend, anon-private last so the C helper's run of the
    /// same loop (right after the backend's session closes) is next to it in time.
    public func plan() -> [BenchPlanEntry] {
        let bar = Self.memoryBARSize(pciAddress: pci.address)
        var kinds = options.kinds.filter { $0 != .anonPrivate }
        if options.kinds.contains(.anonPrivate) { kinds.append(.anonPrivate) }
        var out: [BenchPlanEntry] = []
        for b in options.backends {
            for k in kinds {
                for s in BenchOptions.sizes(for: k, from: options.sizes, barSize: bar) { out.append(BenchPlanEntry(backend: b, kind: k, size: s)) }
            }
        }
        return out
    }

    func emit(_ e: BenchEvent) { streamWriter?.emit(e) }

    /// Runs the plan; every point is sent to the stream the moment it is final.
    public func run(progress: (String) -> Void = { _ in }) throws -> BenchRun {
        let plan = plan()
        let start = monotonicNanos()
        let fmt = ISO8601DateFormatter()
        let device = "\(pci.address) [\(pci.vendor.dropFirst(2)):\(pci.device.dropFirst(2))] group \(group)"
        var run = BenchRun(kernelRelease: kernelRelease(), device: device, started: fmt.string(from: Date()), settings: options.settings)
        emit(.header(run, planned: plan.count))
        var helperPoints: [BenchPoint] = []
        var helperCommands: [String] = []
        var helperErrors: [String] = []
        var done = 0
        for backend in options.backends {
            let entries = plan.filter { $0.backend == backend }
            let points = try runBackend(backend, entries) { p in
                done += 1
                progress("[\(done)/\(plan.count)] \(p.backend) \(p.kind) \(formatSize(p.size)): " + Self.progressText(p))
                emit(.point(p))
            }
            run.points += points
            // The group is free again: the C helper's loop on the same sizes and offsets.
            guard let helper = options.cHelper, BenchOptions.cHelperBackends.contains(backend.rawValue) else { continue }
            progress("C helper, \(backend.rawValue)")
            let h = runCHelper(helper, backend: backend, swift: points)
            helperCommands += h.commands
            helperPoints += h.points
            if let e = h.error { helperErrors.append("\(backend.rawValue): \(e)") }
        }
        if options.cHelper != nil {
            let h = CHelperResult(commands: helperCommands, points: helperPoints, error: helperErrors.isEmpty ? nil : helperErrors.joined(separator: "; "))
            run.cHelper = h
            emit(.cHelper(h))
        }
        run.seconds = Double(monotonicNanos() - start) / 1e9
        run.recompute()
        emit(.end(seconds: run.seconds!))
        return run
    }

    static func progressText(_ p: BenchPoint) -> String {
        switch p.status {
        case .ok: return "map p50 \(BenchText.duration(p.map?.p50)), unmap p50 \(BenchText.duration(p.unmap?.p50))"
        case .skip: return "skip: \(p.reason ?? "")"
        case .error: return "error: \(p.reason ?? "")"
        }
    }

    func runBackend(_ backend: BackendKind, _ entries: [BenchPlanEntry], each: (BenchPoint) -> Void) throws -> [BenchPoint] {
        func all(_ status: BenchPoint.Status, _ reason: String) -> [BenchPoint] {
            entries.map { e in
                let p = BenchPoint(backend: backend.rawValue, kind: e.kind.rawValue, size: e.size, status: status, reason: reason)
                each(p)
                return p
            }
        }
        var ro = RunOptions(device: options.device)
        ro.dataCheck = false  // no scratch page, no bus mastering: only the BAR mmaps
        ro.fsDir = options.fsDir
        ro.tmpfsDir = options.tmpfsDir
        ro.fsdaxDir = options.fsdaxDir
        ro.devdax = options.devdax
        let session: Session
        do {
            session = try Session(backend: backend, group: group, options: ro, pci: pci)
        } catch let e as BackendUnavailable {
            return all(.skip, e.reason)
        } catch let e as UsageError {
            throw e
        } catch {
            return all(.error, "\(backend.rawValue) container set-up: \(error)")
        }
        defer { session.close() }
        let largest = entries.map(\.size).max() ?? 0
        if !session.info.iovaRanges.isEmpty && !session.info.iovaRanges.contains(where: { $0.contains(options.iova, size: max(largest, 1)) }) {
            return all(.error, String(format: "IOVA 0x%llx + %@ is outside the container's valid ranges (--iova)", options.iova, formatSize(largest)))
        }
        _ = session.kmsg?.drain()
        var out: [BenchPoint] = []
        for e in entries {
            var p: BenchPoint
            if e.kind.needsDevice && !session.deviceOpen {
                do { try session.openDevice() } catch {
                    p = BenchPoint(backend: backend.rawValue, kind: e.kind.rawValue, size: e.size, status: .error, reason: "device open failed: \(error)")
                    out.append(p)
                    each(p)
                    continue
                }
            }
            p = measure(e, session: session)
            if let log = session.kmsg?.drain() {
                let fatal = KernelLog.fatalLines(log)
                if !fatal.isEmpty {
                    p.status = .error
                    p.reason = ([p.reason].compactMap { $0 } + ["kernel log: " + fatal.joined(separator: " | ")]).joined(separator: "; ")
                }
            }
            out.append(p)
            each(p)
        }
        return out
    }

    /// One point: build the region, warm up, then timed map/unmap pairs until the repetitions
    /// are done or the budget is spent with at least minRepetitions samples.
    func measure(_ e: BenchPlanEntry, session: Session) -> BenchPoint {
        let began = monotonicNanos()
        func point(_ status: BenchPoint.Status, _ reason: String?, map: [UInt64] = [], unmap: [UInt64] = [], props: [String: String] = [:]) -> BenchPoint {
            BenchPoint(backend: e.backend.rawValue, kind: e.kind.rawValue, size: e.size, status: status, reason: reason, warmup: options.warmup,
                       mapNanos: map, unmapNanos: unmap, properties: props, seconds: Double(monotonicNanos() - began) / 1e9)
        }
        guard let backing = Backings.backing(for: e.kind) else { return point(.error, "no region backing for \(e.kind.rawValue)") }
        var instance: String?
        if e.kind == .bar {
            guard let bar = session.bars.first(where: { $0.memory != nil }) else {
                return point(.skip, session.bars.isEmpty ? "device has no memory BAR" : "no BAR is mmappable")
            }
            instance = bar.name
        }
        let ctx = RegionContext(bars: session.bars, fsDir: options.fsDir, tmpfsDir: options.tmpfsDir, fsdaxDir: options.fsdaxDir,
                                devdax: options.devdax)
        let region: Region
        do {
            region = try backing.build(size: e.kind == .bar ? 0 : e.size, instance: instance, context: ctx)
        } catch let u as RegionUnavailable {
            return point(.skip, u.reason)
        } catch {
            return point(.error, "building the region: \(error)")
        }
        defer { _ = region.release() }
        guard region.size >= e.size else { return point(.skip, "the region is only \(formatSize(region.size))") }
        var props = region.properties
        props["vaddr_offset_2m"] = String(region.vaddr % (2 << 20))
        if e.kind == .anonPrivate || e.kind == .thp, let huge = Mem.smaps(for: region.vaddr)["AnonHugePages"] {
            props["anon_huge_kb"] = huge.split(separator: " ").first.map(String.init)
        }

        let c = session.space
        let iova = options.iova
        let size = e.size
        let total = options.warmup + options.repetitions
        let minimum = min(options.minRepetitions, options.repetitions)
        let budget = UInt64(options.budgetSeconds * 1e9)
        var mapNs: [UInt64] = []
        var unmapNs: [UInt64] = []
        mapNs.reserveCapacity(options.repetitions)
        unmapNs.reserveCapacity(options.repetitions)
        var start: UInt64 = 0
        for i in 0..<total {
            if i == options.warmup { start = monotonicNanos() }
            let t0 = monotonicNanos()
            let r = c.map(vaddr: region.vaddr, iova: iova, size: size, flags: .readWrite)
            let t1 = monotonicNanos()
            if case .failure(let err) = r {
                return point(.error, "VFIO_IOMMU_MAP_DMA: \(err.symbol)", map: mapNs, unmap: unmapNs, props: props)
            }
            if i == 0 && options.warmup > 0, let level = session.iommuPageSize(iova: iova) { props["iommu_page"] = level }
            let t2 = monotonicNanos()
            let u = c.unmap(iova: iova, size: size)
            let t3 = monotonicNanos()
            switch u {
            case .failure(let err):
                _ = c.unmap(iova: iova, size: size)
                return point(.error, "VFIO_IOMMU_UNMAP_DMA: \(err.symbol)", map: mapNs, unmap: unmapNs, props: props)
            case .success(let n) where n != size:
                _ = c.unmap(iova: iova, size: size)
                return point(.error, "VFIO_IOMMU_UNMAP_DMA reported \(n) of \(size) bytes", map: mapNs, unmap: unmapNs, props: props)
            case .success:
                break
            }
            if i >= options.warmup {
                mapNs.append(t1 - t0)
                unmapNs.append(t3 - t2)
                if mapNs.count >= minimum && monotonicNanos() - start > budget { break }
            }
        }
        return point(.ok, nil, map: mapNs, unmap: unmapNs, props: props)
    }

    /// The C helper's JSON (bench/map_bench.c).
    struct CHelperOutput: Decodable {
        struct Point: Decodable {
            var backend: String
            var kind: String
            var size: UInt64
            var status: String
            var reason: String?
            var vaddr_offset: UInt64?
            var anon_huge_kb: Int?
            var warmup: Int?
            var map_ns: [UInt64]?
            var unmap_ns: [UInt64]?
        }
        var schema: String
        var kernel: String
        var points: [Point]
    }

    static func parseCHelper(_ data: Data) throws -> [BenchPoint] {
        let out = try JSONDecoder().decode(CHelperOutput.self, from: data)
        guard out.schema == "vfio-exerciser-map-bench/1" else { throw UsageError("C helper speaks \(out.schema)") }
        return out.points.map { p in
            var props: [String: String] = [:]
            if let o = p.vaddr_offset { props["vaddr_offset_2m"] = String(o) }
            if let k = p.anon_huge_kb { props["anon_huge_kb"] = String(k) }
            return BenchPoint(backend: p.backend, kind: p.kind, source: "c", size: p.size,
                              status: p.status == "ok" ? .ok : .error, reason: p.reason, warmup: p.warmup ?? 0,
                              mapNanos: p.map_ns ?? [], unmapNanos: p.unmap_ns ?? [], properties: props)
        }
    }

    /// Runs bench/map_bench for one backend at the anon-private sizes, each region placed at the
    /// Swift region's offset modulo 2 MiB. Only one process may hold the group: ours is closed.
    func runCHelper(_ path: String, backend: BackendKind, swift: [BenchPoint]) -> CHelperResult {
        let offsets = Dictionary(swift.filter { $0.kind == CaseKind.anonPrivate.rawValue }
            .map { ($0.size, $0.properties["vaddr_offset_2m"] ?? "0") }, uniquingKeysWith: { a, _ in a })
        let sizes = offsets.isEmpty ? BenchOptions.sizes(for: .anonPrivate, from: options.sizes, barSize: nil) : offsets.keys.sorted()
        var args = ["--device", pci.address, "--backend", backend.rawValue]
        for s in sizes { args += ["--size", "\(s)@\(offsets[s] ?? "0")"] }
        args += ["--reps", String(options.repetitions), "--warmup", String(options.warmup),
                 "--min-reps", String(min(options.minRepetitions, options.repetitions)),
                 "--budget", String(options.budgetSeconds), "--iova", String(options.iova)]
        let command = [path] + args
        guard FileManager.default.isExecutableFile(atPath: path) else {
            return CHelperResult(commands: [command.joined(separator: " ")], points: [], error: "\(path) is not executable")
        }
        // posix_spawn, not Foundation's Process: in the initramfs guest Process cannot create its
        // run-loop socket pair and never reports the child's end.
        let limit = 120 + Double(sizes.count) * (options.budgetSeconds + 30)
        let r = Subprocess.run(command, timeout: limit)
        if let e = r.error { return CHelperResult(commands: [command.joined(separator: " ")], points: [], error: e) }
        let data = r.stdout
        let errText = String(decoding: r.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard r.status == 0 else {
            return CHelperResult(commands: [command.joined(separator: " ")], points: [],
                                 error: "exit \(r.status)" + (errText.isEmpty ? "" : ": \(errText)"))
        }
        do {
            return CHelperResult(commands: [command.joined(separator: " ")], points: try Self.parseCHelper(data))
        } catch {
            return CHelperResult(commands: [command.joined(separator: " ")], points: [], error: "unreadable output: \(error)")
        }
    }
}
