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
    /// Per pass: timed pairs, untimed pairs before them, the pairs a point always gets, and the
    /// seconds after which it stops once it has them.
    public var repetitions = 8
    public var warmup = 2
    public var minRepetitions = 3
    public var budgetSeconds = 0.5
    /// Passes over the whole sweep (guest-sized maps included): every point is measured once
    /// per pass, its repeats a whole sweep apart, so each row has its own run-to-run spread.
    public var passes = 4
    /// The IOVA every point maps at (the C helper uses the same).
    public var iova: UInt64 = 1 << 32
    /// bench/map_bench built static: takes turns with this tool in the comparison.
    public var cHelper: String?
    /// The comparison: rounds of one Swift and one C block per (backend, size), pairs per
    /// block, the seed of the per-round order. 0 rounds: no comparison and no noise floor.
    public var rounds = 10
    public var roundPairs = 5
    public var seed: UInt64 = 1
    /// anon-private sizes the comparison runs at (default: those of --size up to 128M).
    public var compareSizes: [UInt64]?
    /// Guest RAM sizes mapped as q35 lays them out; empty: none.
    public var guestSizes: [UInt64] = BenchOptions.defaultGuestSizes
    public var guestKinds: [String] = BenchOptions.guestKinds
    /// q35's max-ram-below-4g: 512M so that guests the test VM can hold split around the PCI hole.
    public var guestBelow4G: UInt64 = 512 << 20
    public var fsDir = "/mnt/fs"
    public var tmpfsDir = "/dev/shm"
    public var fsdaxDir = "/mnt/dax"
    public var devdax: String?
    /// Who measured: the version and build commit, so two runs of different builds say so.
    public var tool = toolVersion

    public init(device: String) { self.device = device }

    public static let defaultKinds: [CaseKind] = [.anonPrivate, .memfd, .hugetlb2M, .hugetlb1G, .thp, .bar]
    public static let defaultSizes: [UInt64] = [4 << 10, 64 << 10, 1 << 20, 2 << 20, 16 << 20, 128 << 20, 1 << 30]
    /// What the test VM (4G, 1×1G + 64×2M hugepages) can hold; the sizes a backing cannot fill skip.
    public static let defaultGuestSizes: [UInt64] = [64 << 20, 128 << 20, 512 << 20, 1 << 30]
    /// Guest RAM backings: 4K pages, THP (QEMU's madvise), hugetlbfs 2M and 1G.
    public static let guestKinds = ["guest-anon-4K", "guest-thp", "guest-hugetlb-2M", "guest-hugetlb-1G"]
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
        if passes < 1 { throw UsageError("--passes must be at least 1") }
        if !(budgetSeconds >= 0) { throw UsageError("--budget must not be negative") }
        if iova % (1 << 30) != 0 { throw UsageError("--iova must be 1 GiB aligned") }
        if backends.isEmpty || kinds.isEmpty || sizes.isEmpty { throw UsageError("nothing to measure") }
        if rounds < 0 || rounds == 1 { throw UsageError("--rounds must be 0 (no comparison) or at least 2") }
        if roundPairs < 1 { throw UsageError("--round-pairs must be at least 1") }
        for s in compareSizes ?? [] where s == 0 || s % 4096 != 0 {
            throw UsageError("--compare-size \(formatSize(s)) is not a positive multiple of 4K")
        }
        for s in guestSizes where s < (2 << 20) || s % (2 << 20) != 0 {
            throw UsageError("--guest-size \(formatSize(s)) is not a positive multiple of 2M")
        }
        for k in guestKinds where !Self.guestKinds.contains(k) {
            throw UsageError("--guest-kind \(k): one of \(Self.guestKinds.joined(separator: ", "))")
        }
        if guestBelow4G < (2 << 20) || guestBelow4G > (1 << 32) { throw UsageError("--guest-below-4g must be between 2M and 4G") }
    }

    /// The comparison's sizes: anon-private's, up to 128M unless given (a 1G block costs seconds per pair in TCG).
    public var comparisonSizes: [UInt64] {
        compareSizes.map { Array(Set($0)).sorted() } ?? Array(Set(sizes)).sorted().filter { $0 <= 128 << 20 }
    }

    /// Guest sizes a backing can be built at: hugetlb in whole pages.
    public static func guestSizes(for kind: String, from sizes: [UInt64]) -> [UInt64] {
        let sorted = Array(Set(sizes)).sorted()
        switch kind {
        case "guest-hugetlb-1G": return sorted.filter { $0 % (1 << 30) == 0 }
        default: return sorted.filter { $0 % (2 << 20) == 0 }
        }
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
                      budgetSeconds: budgetSeconds, iova: iova, rounds: rounds, roundPairs: roundPairs, seed: seed,
                      guestSizes: guestSizes, guestBelow4G: guestBelow4G, guestBackend: guestBackend?.rawValue, passes: passes)
    }

    /// QEMU's backend for guest RAM: type1v2 when measured, else the first.
    public var guestBackend: BackendKind? {
        guestSizes.isEmpty || guestKinds.isEmpty ? nil : backends.first { $0.rawValue == "type1v2" } ?? backends.first
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
/// timed alone with CLOCK_MONOTONIC. Then the comparison (this tool and bench/map_bench.c taking
/// turns on anon-private) and the guest-sized maps.
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

    /// Every point of the sweep in measuring order: per backend, anon-private last.
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
        var run = BenchRun(tool: options.tool, kernelRelease: kernelRelease(), device: device, started: fmt.string(from: Date()), settings: options.settings)
        let sides = options.cHelper == nil ? 1 : 2
        let blocks = options.rounds * sides * options.comparisonSizes.count * comparisonBackends.count
        let guests = options.guestBackend == nil ? 0 : options.guestKinds.map { BenchOptions.guestSizes(for: $0, from: options.guestSizes).count }.reduce(0, +)
        let passes = options.passes
        emit(.header(run, planned: (plan.count + guests) * passes + blocks))
        // The yardstick three times at each stage: the host's speed through the run.
        func yardstick(_ at: String) {
            for _ in 0..<3 {
                guard let y = Yardstick.measure(at: at) else { return }
                run.yardsticks = (run.yardsticks ?? []) + [y]
                emit(.yardstick(y))
            }
        }
        _ = Yardstick.measure(at: "warm-up")  // the first sample of a boot ran ~3× slower (run E)
        yardstick("start")
        var done = 0
        var measured: [BenchPoint] = []
        // Pass after pass over the whole sweep: a point's repeats lie a sweep apart.
        for pass in 0..<passes {
            for backend in options.backends {
                let entries = plan.filter { $0.backend == backend }
                measured += try runBackend(backend, entries, pass: pass) { p in
                    done += 1
                    progress("[\(done)/\(plan.count * passes)] pass \(pass + 1) \(p.backend) \(p.kind) \(formatSize(p.size)): " + Self.progressText(p))
                    emit(.point(p))
                }
            }
        }
        run.points = BenchPoint.mergePasses(measured)
        if options.cHelper != nil { run.cHelper = CHelperResult(commands: [], points: []) }
        yardstick("comparison")
        run.rounds = try runComparison(helper: &run.cHelper, progress: progress)
        if let h = run.cHelper { emit(.cHelper(h)) }
        yardstick("guest")
        var guestPoints: [BenchPoint] = []
        for pass in 0..<passes { guestPoints += try runGuest(pass: pass, progress: progress) }
        run.points += BenchPoint.mergePasses(guestPoints)
        yardstick("end")
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

    func runBackend(_ backend: BackendKind, _ entries: [BenchPlanEntry], pass: Int = 0, each: (BenchPoint) -> Void) throws -> [BenchPoint] {
        func all(_ status: BenchPoint.Status, _ reason: String) -> [BenchPoint] {
            entries.map { e in
                var p = BenchPoint(backend: backend.rawValue, kind: e.kind.rawValue, size: e.size, status: status, reason: reason)
                p.pass = pass
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
                    p.pass = pass
                    out.append(p)
                    each(p)
                    continue
                }
            }
            p = measure(e, session: session)
            p.pass = pass
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
        let brackets = IoctlBrackets()
        var cpu0 = ThreadCPU.now()
        for i in 0..<total {
            if i == options.warmup { brackets.calibrate(); start = monotonicNanos(); cpu0 = brackets.start() }
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
        let cpu = brackets.stop() - cpu0
        var p = point(.ok, nil, map: mapNs, unmap: unmapNs, props: props)
        (p.userMicros, p.systemMicros, p.cpuMicros, p.brackets) = (cpu.user, cpu.system, cpu.total, brackets.result)
        return p
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
            var user_us: Double?
            var sys_us: Double?
            var cpu_us: Double?
            var bracket_ns: UInt64?
            var bracket_calls: Int?
            var empty_inside_median_ns: UInt64?
            var empty_whole_median_ns: UInt64?
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
            var b = BenchPoint(backend: p.backend, kind: p.kind, source: "c", size: p.size,
                               status: p.status == "ok" ? .ok : .error, reason: p.reason, warmup: p.warmup ?? 0,
                               mapNanos: p.map_ns ?? [], unmapNanos: p.unmap_ns ?? [], properties: props,
                               userMicros: p.user_us, systemMicros: p.sys_us, cpuMicros: p.cpu_us)
            if let i = p.bracket_ns, let n = p.bracket_calls, let ei = p.empty_inside_median_ns, let ew = p.empty_whole_median_ns {
                b.brackets = CPUBrackets(insideNanos: i, calls: n, emptyInside: Double(ei), emptyWhole: Double(ew))
            }
            return b
        }
    }

    /// The backends the comparison runs on: those the C helper speaks (all, without it).
    var comparisonBackends: [BackendKind] {
        options.backends.filter { options.cHelper == nil || BenchOptions.cHelperBackends.contains($0.rawValue) }
    }

    /// Swift and C take turns per (backend, size), rounds outermost, the order within each pair
    /// drawn from the seed. Each block opens its own container and builds its own region the
    /// same way (2M-aligned, one write per page), warms up alike, then times `roundPairs` pairs.
    func runComparison(helper: inout CHelperResult?, progress: (String) -> Void) throws -> [RoundSample] {
        let sizes = options.comparisonSizes
        let backends = comparisonBackends
        guard options.rounds > 0, !sizes.isEmpty, !backends.isEmpty else { return [] }
        let points = backends.flatMap { b in sizes.map { (backend: b, size: $0) } }
        let sides: [BenchSide] = options.cHelper == nil ? [.swift] : [.swift, .c]
        let blocks = AlternationSchedule.blocks(rounds: options.rounds, points: points.count, sides: sides, seed: options.seed)
        var out: [RoundSample] = []
        var errors: [String] = []
        for (n, b) in blocks.enumerated() {
            let (backend, size) = points[b.point]
            let order = out.filter { $0.round == b.round && $0.backend == backend.rawValue && $0.size == size }.count
            progress("comparison [\(n + 1)/\(blocks.count)] round \(b.round + 1) \(backend.rawValue) \(formatSize(size)) \(b.side.rawValue)")
            var r: RoundSample
            switch b.side {
            case .swift: r = try swiftBlock(backend, size: size)
            case .c:
                let (sample, command) = cBlock(options.cHelper!, backend: backend, size: size)
                r = sample
                if helper?.commands.isEmpty ?? false { helper?.commands = [command] }
            }
            (r.round, r.order) = (b.round, order)
            if r.status == .error, let e = r.reason, !errors.contains(e) { errors.append(e) }
            emit(.round(r))
            out.append(r)
        }
        if options.cHelper != nil && !errors.isEmpty { helper?.error = errors.prefix(3).joined(separator: "; ") }
        return out
    }

    func benchRunOptions() -> RunOptions {
        var ro = RunOptions(device: options.device)
        ro.dataCheck = false
        ro.fsDir = options.fsDir
        ro.tmpfsDir = options.tmpfsDir
        ro.fsdaxDir = options.fsdaxDir
        ro.devdax = options.devdax
        return ro
    }

    /// map_bench's region recipe: 2M-aligned private anonymous memory, one write per page.
    static func comparisonRegion(_ size: UInt64) throws -> MappedMemory {
        let m = try MappedMemory.map(length: Int(size), prot: Mem.rw, flags: Mem.anon, alignment: 2 << 20)
        Mem.touch(m)
        return m
    }

    func swiftBlock(_ backend: BackendKind, size: UInt64) throws -> RoundSample {
        var r = RoundSample(backend: backend.rawValue, size: size, round: 0, side: .swift, order: 0)
        func fail(_ why: String) -> RoundSample { r.status = .error; r.reason = why; return r }
        let session: Session
        do { session = try Session(backend: backend, group: group, options: benchRunOptions(), pci: pci) } catch let e as UsageError {
            throw e
        } catch { return fail("\(backend.rawValue) container set-up: \(error)") }
        defer { session.close() }
        let m: MappedMemory
        do { m = try Self.comparisonRegion(size) } catch { return fail("mmap: \(error)") }
        defer { m.unmap() }
        r.anonHugeKB = Mem.smaps(for: m.address)["AnonHugePages"]?.split(separator: " ").first.map(String.init)
        let c = session.space, iova = options.iova
        r.mapNanos.reserveCapacity(options.roundPairs)
        r.unmapNanos.reserveCapacity(options.roundPairs)
        let brackets = IoctlBrackets()
        var cpu0 = ThreadCPU.now()
        for i in 0..<(options.warmup + options.roundPairs) {
            if i == options.warmup { brackets.calibrate(); cpu0 = brackets.start() }
            let t0 = monotonicNanos()
            let mr = c.map(vaddr: m.address, iova: iova, size: size, flags: .readWrite)
            let t1 = monotonicNanos()
            if case .failure(let e) = mr { return fail("VFIO_IOMMU_MAP_DMA: \(e.symbol)") }
            let t2 = monotonicNanos()
            let ur = c.unmap(iova: iova, size: size)
            let t3 = monotonicNanos()
            guard case .success(let n) = ur, n == size else { _ = c.unmap(iova: iova, size: size); return fail("VFIO_IOMMU_UNMAP_DMA failed") }
            if i >= options.warmup {
                r.mapNanos.append(t1 - t0)
                r.unmapNanos.append(t3 - t2)
            }
        }
        let cpu = brackets.stop() - cpu0
        (r.userMicros, r.systemMicros, r.cpuMicros, r.brackets) = (cpu.user, cpu.system, cpu.total, brackets.result)
        return r
    }

    /// One C block: map_bench for one backend and size, the same warm-up and pair count, no budget.
    func cBlock(_ path: String, backend: BackendKind, size: UInt64) -> (RoundSample, String) {
        var r = RoundSample(backend: backend.rawValue, size: size, round: 0, side: .c, order: 0)
        let command = [path, "--device", pci.address, "--backend", backend.rawValue, "--size", "\(size)@0",
                       "--reps", String(options.roundPairs), "--warmup", String(options.warmup), "--min-reps", String(options.roundPairs),
                       "--budget", "0", "--iova", String(options.iova)]
        let line = command.joined(separator: " ")
        func fail(_ why: String) -> (RoundSample, String) { r.status = .error; r.reason = why; return (r, line) }
        guard FileManager.default.isExecutableFile(atPath: path) else { return fail("\(path) is not executable") }
        // posix_spawn, not Foundation's Process: in the initramfs guest Process never reports the child's end.
        let x = Subprocess.run(command, timeout: 120 + Double(options.warmup + options.roundPairs) * 30)
        if let e = x.error { return fail(e) }
        let err = String(decoding: x.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard x.status == 0 else { return fail("exit \(x.status)" + (err.isEmpty ? "" : ": \(err)")) }
        guard let p = try? Self.parseCHelper(x.stdout).first else { return fail("unreadable output") }
        guard p.status == .ok else { return fail(p.reason ?? "error") }
        (r.mapNanos, r.unmapNanos, r.userMicros, r.systemMicros, r.cpuMicros) = (p.mapNanos, p.unmapNanos, p.userMicros, p.systemMicros, p.cpuMicros)
        r.brackets = p.brackets
        guard r.brackets != nil else { return fail("no CPU brackets in the C helper's output (an older bench/map_bench?)") }
        r.anonHugeKB = p.properties["anon_huge_kb"]
        return (r, line)
    }

    // MARK: guest-sized maps

    static let madvNoHugepage: Int32 = 15  // MADV_NOHUGEPAGE

    /// One host allocation for the whole guest RAM, as QEMU's RAM block.
    func guestRegion(_ kind: String, size: UInt64) throws -> Region {
        let ctx = RegionContext(bars: [], fsDir: options.fsDir, tmpfsDir: options.tmpfsDir, fsdaxDir: options.fsdaxDir, devdax: options.devdax)
        switch kind {
        case "guest-thp": return try THP().build(size: size, instance: nil, context: ctx)
        case "guest-hugetlb-2M": return try Hugetlb2M().build(size: size, instance: nil, context: ctx)
        case "guest-hugetlb-1G": return try Hugetlb1G().build(size: size, instance: nil, context: ctx)
        default:
            let m = try Mem.anonymous(size, alignment: 2 << 20)
            _ = madvise(m.base, m.length, Self.madvNoHugepage)
            Mem.touch(m)
            return Region(vaddr: m.address, size: size, access: .readWrite, keep: [m])
        }
    }

    /// Guest RAM mapped as QEMU maps it for VFIO: one MAP_DMA per q35 RAM slot, IOVA = guest
    /// physical address; timed for the whole guest (all slots), then unmapped slot by slot.
    func runGuest(pass: Int = 0, progress: (String) -> Void) throws -> [BenchPoint] {
        guard let backend = options.guestBackend else { return [] }
        let entries = options.guestKinds.flatMap { k in BenchOptions.guestSizes(for: k, from: options.guestSizes).map { (k, $0) } }
        guard !entries.isEmpty else { return [] }
        func point(_ k: String, _ size: UInt64, _ status: BenchPoint.Status, _ reason: String?) -> BenchPoint {
            var p = BenchPoint(backend: backend.rawValue, kind: k, size: size, status: status, reason: reason)
            p.pass = pass
            return p
        }
        let session: Session
        do { session = try Session(backend: backend, group: group, options: benchRunOptions(), pci: pci) } catch let e as UsageError {
            throw e
        } catch {
            return entries.map { point($0.0, $0.1, .skip, "\(backend.rawValue): \(error)") }
        }
        defer { session.close() }
        var out: [BenchPoint] = []
        for (i, (kind, size)) in entries.enumerated() {
            let began = monotonicNanos()
            let slots = GuestLayout.q35(ram: size, maxBelow4G: options.guestBelow4G)
            var p: BenchPoint
            if let bad = slots.first(where: { s in !session.info.iovaRanges.isEmpty && !session.info.iovaRanges.contains { $0.contains(s.gpa, size: s.size) } }) {
                p = point(kind, size, .skip, String(format: "slot at 0x%llx + %@ is outside the container's IOVA ranges", bad.gpa, formatSize(bad.size)))
            } else {
                do {
                    let region = try guestRegion(kind, size: size)
                    defer { _ = region.release() }
                    p = measureGuest(kind, size: size, slots: slots, region: region, session: session, backend: backend)
                } catch let u as RegionUnavailable {
                    p = point(kind, size, .skip, u.reason)
                } catch {
                    p = point(kind, size, .error, "building the region: \(error)")
                }
            }
            p.seconds = Double(monotonicNanos() - began) / 1e9
            p.pass = pass
            progress("guest pass \(pass + 1) [\(i + 1)/\(entries.count)] \(kind) \(formatSize(size)): " + Self.progressText(p))
            emit(.point(p))
            out.append(p)
        }
        return out
    }

    func measureGuest(_ kind: String, size: UInt64, slots: [GuestLayout.Slot], region: Region, session: Session, backend: BackendKind) -> BenchPoint {
        var props = region.properties
        props["slots"] = slots.map { String(format: "0x%llx+%@", $0.gpa, formatSize($0.size)) }.joined(separator: " ")
        if let h = Mem.smaps(for: region.vaddr)["AnonHugePages"] { props["anon_huge_kb"] = h.split(separator: " ").first.map(String.init) }
        let c = session.space
        var mapNs: [UInt64] = [], unmapNs: [UInt64] = []
        func fail(_ why: String) -> BenchPoint {
            for s in slots { _ = c.unmap(iova: s.gpa, size: s.size) }
            return BenchPoint(backend: backend.rawValue, kind: kind, size: size, status: .error, reason: why, warmup: options.warmup,
                              mapNanos: mapNs, unmapNanos: unmapNs, properties: props)
        }
        let minimum = min(options.minRepetitions, options.repetitions)
        var start: UInt64 = 0
        let brackets = IoctlBrackets()
        var cpu0 = ThreadCPU.now()
        for i in 0..<(options.warmup + options.repetitions) {
            if i == options.warmup { brackets.calibrate(); start = monotonicNanos(); cpu0 = brackets.start() }
            let t0 = monotonicNanos()
            for s in slots {
                if case .failure(let e) = c.map(vaddr: region.vaddr + s.hostOffset, iova: s.gpa, size: s.size, flags: .readWrite) {
                    return fail(String(format: "VFIO_IOMMU_MAP_DMA slot 0x%llx: %@", s.gpa, e.symbol))
                }
            }
            let t1 = monotonicNanos()
            for s in slots {
                guard case .success(let n) = c.unmap(iova: s.gpa, size: s.size), n == s.size else {
                    return fail(String(format: "VFIO_IOMMU_UNMAP_DMA slot 0x%llx failed", s.gpa))
                }
            }
            let t2 = monotonicNanos()
            if i >= options.warmup {
                mapNs.append(t1 - t0)
                unmapNs.append(t2 - t1)
                if mapNs.count >= minimum && monotonicNanos() - start > UInt64(options.budgetSeconds * 1e9) { break }
            }
        }
        let cpu = brackets.stop() - cpu0
        var p = BenchPoint(backend: backend.rawValue, kind: kind, size: size, warmup: options.warmup, mapNanos: mapNs, unmapNanos: unmapNs,
                           properties: props, userMicros: cpu.user, systemMicros: cpu.system, cpuMicros: cpu.total)
        p.brackets = brackets.result
        return p
    }
}

/// Every ioctl this thread makes through cvfio_ioctl between start() and stop(), bracketed by
/// thread-CPU reads (cvfio_cpu.h, as bench/map_bench.c does), with the empty brackets timed
/// before. Stops on deinit, so an early return leaves no bracket behind.
final class IoctlBrackets {
    private let bracket = UnsafeMutablePointer<cvfio_bracket>.allocate(capacity: 1)
    private var cost = cvfio_bracket_cost(inside_ns: 0, whole_ns: 0, n: 0)
    private var running = false

    init() { bracket.initialize(to: cvfio_bracket(inside_ns: 0, calls: 0)) }

    func calibrate() { cost = cvfio_bracket_calibrate() }

    /// Starts bracketing; returns the thread's CPU time at the start of the window.
    func start() -> ThreadCPU {
        cvfio_bracket_set(bracket)
        running = true
        return ThreadCPU.now()
    }

    /// The thread's CPU time at the end of the window; stops bracketing.
    func stop() -> ThreadCPU {
        let t = ThreadCPU.now()
        cvfio_bracket_set(nil)
        running = false
        return t
    }

    var result: CPUBrackets {
        CPUBrackets(insideNanos: bracket.pointee.inside_ns, calls: Int(bracket.pointee.calls), emptyInside: Double(cost.inside_ns),
                    emptyWhole: Double(cost.whole_ns), calibrations: cost.n > 0 ? 1 : 0)
    }

    deinit {
        if running { cvfio_bracket_set(nil) }
        bracket.deallocate()
    }
}

/// The calling thread's CPU time, µs: the exact total (CLOCK_THREAD_CPUTIME_ID) and getrusage's
/// user / system split (RUSAGE_THREAD), which the kernel samples by the tick: a cross-check only.
struct ThreadCPU {
    var user: Double
    var system: Double
    var total: Double

    static func now() -> ThreadCPU {
        var ru = rusage()
        _ = getrusage(__rusage_who_t(1), &ru)  // RUSAGE_THREAD, not imported
        func us(_ t: timeval) -> Double { Double(t.tv_sec) * 1e6 + Double(t.tv_usec) }
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return ThreadCPU(user: us(ru.ru_utime), system: us(ru.ru_stime), total: Double(ts.tv_sec) * 1e6 + Double(ts.tv_nsec) / 1e3)
    }

    static func - (a: ThreadCPU, b: ThreadCPU) -> ThreadCPU {
        ThreadCPU(user: a.user - b.user, system: a.system - b.system, total: a.total - b.total)
    }
}
