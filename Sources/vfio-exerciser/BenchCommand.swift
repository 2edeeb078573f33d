import ArgumentParser
import Exerciser
import Foundation

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pinning throughput and per-call latency per region kind, size and backend; the tool's own cost; kernels compared.",
        discussion: """
        The sweep runs --passes times, each point once per pass, so every row's repeats lie a whole sweep apart. Per
        pass each region is built once per (kind, size) and mapped and unmapped at one IOVA: --warmup pairs first,
        then up to --repetitions timed pairs (each ioctl timed alone, CLOCK_MONOTONIC); a point stops early once it
        has --min-repetitions samples and --budget seconds have passed. Statistics are nearest-rank percentiles of the
        pooled samples; GiB/s is size / median call time. CPU per call is exact: the thread's CPU time
        (CLOCK_THREAD_CPUTIME_ID), sys = CPU inside thread-clock reads around each ioctl less an empty bracket's
        (calibrated in the run), user = the rest less the brackets' own cost.
        The comparison: --rounds rounds in which this tool and bench/map_bench.c (--c-helper) take turns per
        anon-private size, the order drawn per round from --seed; each block opens its container, builds its region the
        same way and times --round-pairs pairs. Swift/C ratios come with 95 % bootstrap intervals over the rounds; the
        Swift blocks, repeats of one point with nothing changed, give the noise floor. Guest-sized maps: each
        --guest-size of RAM laid out as q35 does, one MAP_DMA per slot, timed for the whole guest.

        On a machine with the device bound to vfio-pci: `bench --device BDF [--output run.json]`.
        In the test VM, one boot per kernel, compared: `bench --vm --kernel debian:6.1 --kernel debian:7.3`
        (builds the C helper with gcc, also times the default matrix per kernel; writes under --out).
        Against a saved run: `--baseline run.json`: a row is flagged only when its value (the geometric mean of its
        passes' medians) moved beyond a margin times the larger of the two runs' largest pass-to-pass change of that
        row; the margin (56 for 2 passes, 5.6 for 3, 2.5 for 4) makes an unchanged row cross it with p ≈ 1e-4, and
        no limit is below 15 % (the host's speed shifts between runs, which passes within one run cannot see).
        `--current saved.json` reports a saved run again, or with --baseline compares two saved runs. Exit 1 when a point failed, the guest had an incident, or a kind got
        slower than the baseline beyond the noise.
        """)

    // MARK: what to measure

    @Option(help: "PCI address of the device, bound to vfio-pci (not with --vm).")
    var device: String?

    @Option(name: .customLong("backend"), help: "Backend (repeatable; default type1 and type1v2).")
    var backends: [BackendKind] = []

    @Option(name: .customLong("kind"), help: "Region kind (repeatable; default anon-private, memfd, hugetlb-2M, hugetlb-1G, thp, bar).")
    var kinds: [CaseKind] = []

    @Option(name: .customLong("size"), help: "Region size, e.g. 4K, 2M, 1G (repeatable; default 4K 64K 1M 2M 16M 128M 1G). hugetlb and thp use the multiples of their page size, bar the sizes up to the BAR's.")
    var sizes: [String] = []

    @Option(help: "Passes over the whole sweep: each point's repeats, for its own noise floor (at least 2 for --baseline to judge it).")
    var passes = 4

    @Option(help: "Timed map+unmap pairs per point and pass.")
    var repetitions = 8

    @Option(help: "Untimed pairs before them.")
    var warmup = 2

    @Option(help: "Pairs a point always gets per pass, even past --budget.")
    var minRepetitions = 3

    @Option(help: "Seconds of sampling per point and pass after which it stops (once it has --min-repetitions).")
    var budget = 0.5

    @Option(help: .hidden)
    var iova: String?

    @Option(help: "bench/map_bench (static): takes turns with this tool in the comparison.")
    var cHelper: String?

    @Option(help: "Comparison rounds (0: no comparison and no noise floor).")
    var rounds = 10

    @Option(help: "Timed map+unmap pairs per comparison block.")
    var roundPairs = 5

    @Option(help: "Seed of the comparison's per-round order and of the bootstrap.")
    var seed: UInt64 = 1

    @Option(name: .customLong("compare-size"), help: "anon-private size for the comparison (repeatable; default the --size values up to 128M).")
    var compareSizes: [String] = []

    @Option(name: .customLong("guest-size"), help: "Guest RAM size for the guest-sized maps (repeatable; default 64M 128M 512M 1G; 'none' for none).")
    var guestSizes: [String] = []

    @Option(name: .customLong("guest-kind"), help: "Guest RAM backing (repeatable; default guest-anon-4K, guest-thp, guest-hugetlb-2M, guest-hugetlb-1G).")
    var guestKinds: [String] = []

    @Option(name: .customLong("guest-below-4g"), help: "q35's max-ram-below-4g for the guest layout.")
    var guestBelow4G = "512M"

    @OptionGroup var dirs: RegionDirOptions

    // MARK: output and comparison

    @Option(help: "Write the run as JSON here (schema vfio-exerciser-bench/1); the plot goes next to it (.svg).")
    var output: String?

    @Option(help: "Write the SVG plot here instead of next to --output.")
    var plot: String?

    @Option(help: "Append one JSON line per finished point here (the VM's serial port).")
    var stream: String?

    @Option(help: "A saved run (--output of an earlier bench) to compare with.")
    var baseline: String?

    @Option(help: "A saved run to report again (with --baseline: to compare with it), instead of measuring one.")
    var current: String?

    @Option(help: "Percent a median must move, at least, before its kind is flagged (default: the measured noise floor alone).")
    var threshold: Double?

    // MARK: in the test VM

    @Flag(help: "Run in the test VM, one boot per --kernel, and compare the kernels.")
    var vm = false

    @Option(help: "Kernel for --vm (repeatable): debian:6.1, debian:6.12, debian:7.3 or a Debian version. Default: debian:6.1 and debian:7.3.")
    var kernel: [String] = []

    @Option(help: "Where --vm writes per kernel: bench.json, bench.svg, bench.txt, console.log; and the comparison.")
    var out = "out/bench"

    @Option(help: "Seconds before a hung guest is killed.")
    var timeout: Double = 600

    @OptionGroup var guest: GuestOptions

    @Option(help: "Directory holding matrix.yaml and expectations.yaml (for the matrix timing).")
    var configs: String?

    @Flag(help: "With --vm: skip the C helper (no overhead figures).")
    var noCHelper = false

    @Flag(help: "With --vm: do not also time the default matrix on each kernel.")
    var noMatrixTime = false

    @Option(help: "With --vm: boot each kernel this many times and merge the runs, so a state that lasts a boot enters each row's noise floor (use 2 or more for --baseline).")
    var boots = 1

    /// Everything checkable without a kernel, at parse time.
    func validate() throws {
        if let d = device { try validatePCIAddress(d, "--device") }
        guard (1...1_000_000).contains(repetitions) else { throw ValidationError("--repetitions must be between 1 and 1000000") }
        guard (0...1_000_000).contains(warmup) else { throw ValidationError("--warmup must be between 0 and 1000000") }
        guard (1...1_000_000).contains(minRepetitions) else { throw ValidationError("--min-repetitions must be between 1 and 1000000") }
        guard (1...1000).contains(passes) else { throw ValidationError("--passes must be between 1 and 1000") }
        guard (1...16).contains(boots) else { throw ValidationError("--boots must be between 1 and 16") }
        guard budget.isFinite, budget >= 0, budget <= 1_000_000 else { throw ValidationError("--budget must be between 0 and 1000000 seconds") }
        if let t = threshold { guard t.isFinite, t > 0, t <= 1_000_000 else { throw ValidationError("--threshold must be a positive percentage") } }
        guard (0...10_000).contains(rounds), rounds != 1 else { throw ValidationError("--rounds must be 0 (no comparison) or between 2 and 10000") }
        guard (1...1_000_000).contains(roundPairs) else { throw ValidationError("--round-pairs must be between 1 and 1000000") }
        for s in compareSizes where parseSize(s).map({ $0 == 0 || $0 % 4096 != 0 }) ?? true {
            throw ValidationError("--compare-size \(s) is not a positive multiple of 4K (4K, 2M, 1G or bytes)")
        }
        for s in guestSizes where !(s == "none" && guestSizes.count == 1) && parseSize(s).map({ $0 == 0 || $0 % (2 << 20) != 0 }) ?? true {
            throw ValidationError("--guest-size \(s) is not a positive multiple of 2M (or 'none')")
        }
        for k in guestKinds where !BenchOptions.guestKinds.contains(k) {
            throw ValidationError("--guest-kind \(k) is not one of \(BenchOptions.guestKinds.joined(separator: ", "))")
        }
        guard let below = parseSize(guestBelow4G), below >= 2 << 20, below <= 1 << 32, below % (2 << 20) == 0 else {
            throw ValidationError("--guest-below-4g \(guestBelow4G) must be a multiple of 2M between 2M and 4G")
        }
        if vm { try validateSeconds(timeout, "--timeout") }
        for s in sizes where parseSize(s).map({ $0 == 0 || $0 % 4096 != 0 }) ?? true {
            throw ValidationError("--size \(s) is not a positive multiple of 4K (4K, 2M, 1G or bytes)")
        }
        for k in kinds where !BenchOptions.benchable(k) {
            throw ValidationError("--kind \(k.rawValue) cannot be benchmarked (argument edges and bar-plus-anon have no size to sweep)")
        }
        if vm && device != nil { throw ValidationError("--device is for a local run; the VM's device is 0000:00:03.0") }
        if vm && cHelper != nil { throw ValidationError("--c-helper is for a local run; --vm builds bench/map_bench.c itself") }
        if !vm && (!kernel.isEmpty || guest.kernelImage != nil) { throw ValidationError("--kernel and --kernel-image need --vm") }
    }

    func options(device: String) throws -> BenchOptions {
        var o = BenchOptions(device: device)
        o.tool = fullVersion
        if !backends.isEmpty { o.backends = backends }
        if !kinds.isEmpty { o.kinds = kinds }
        if !sizes.isEmpty {
            o.sizes = try sizes.map { s in
                guard let v = parseSize(s) else { throw UsageError("--size \(s): not a size (4K, 2M, 1G, bytes)") }
                return v
            }
        }
        o.repetitions = repetitions
        o.passes = passes
        o.warmup = warmup
        o.minRepetitions = minRepetitions
        o.budgetSeconds = budget
        if let i = iova {
            guard let v = i.hasPrefix("0x") ? UInt64(i.dropFirst(2), radix: 16) : UInt64(i) else { throw UsageError("--iova \(i): not a number") }
            o.iova = v
        }
        o.cHelper = cHelper
        o.rounds = rounds
        o.roundPairs = roundPairs
        o.seed = seed
        if !compareSizes.isEmpty { o.compareSizes = compareSizes.compactMap(parseSize) }
        if guestSizes == ["none"] { o.guestSizes = [] } else if !guestSizes.isEmpty { o.guestSizes = guestSizes.compactMap(parseSize) }
        if !guestKinds.isEmpty { o.guestKinds = guestKinds }
        o.guestBelow4G = parseSize(guestBelow4G) ?? o.guestBelow4G
        o.fsDir = dirs.fsDir
        o.tmpfsDir = dirs.tmpfsDir
        o.fsdaxDir = dirs.fsdaxDir
        o.devdax = dirs.devdax
        try o.validate()
        return o
    }

    /// The measuring options forwarded to the guest.
    var guestArguments: [String] {
        var a: [String] = []
        for b in backends { a += ["--backend", b.rawValue] }
        for k in kinds { a += ["--kind", k.rawValue] }
        for s in sizes { a += ["--size", s] }
        a += ["--passes", String(passes), "--repetitions", String(repetitions), "--warmup", String(warmup), "--min-repetitions", String(minRepetitions),
              "--budget", String(budget), "--rounds", String(rounds), "--round-pairs", String(roundPairs), "--seed", String(seed),
              "--guest-below-4g", guestBelow4G]
        for s in compareSizes { a += ["--compare-size", s] }
        for s in guestSizes { a += ["--guest-size", s] }
        for k in guestKinds { a += ["--guest-kind", k] }
        if let i = iova { a += ["--iova", i] }
        return a
    }

    func run() throws {
        let base = try baseline.map { try BenchRun.load($0) }
        if let path = current {
            var cur = try BenchRun.load(path)
            cur.recompute()  // today's arithmetic on the stored samples
            guard let b = base else {
                print(BenchText.report(cur), terminator: "")
                throw ExitCode(Self.clean(cur) ? 0 : 1)
            }
            let c = BenchComparison.compare(baseline: b, current: cur, threshold: threshold.map { $0 / 100 })
            print(BenchText.comparison(c), terminator: "")
            throw ExitCode(c.slowerKinds.isEmpty ? 0 : 1)
        }
        if vm { throw ExitCode(try runVM(baseline: base)) }
        guard let device else { throw UsageError("bench needs --device BDF (or --vm)") }
        let runner = try BenchRunner(options: try options(device: device), stream: stream)
        let result = try runner.run(progress: progress)
        progressDone()
        print(BenchText.report(result), terminator: "")
        if let o = output { try write(result, json: o, svg: plot ?? Self.svgPath(o)) } else if let p = plot { try write(BenchPlot.svg(result), to: p) }
        var code: Int32 = Self.clean(result) ? 0 : 1
        if let b = base {
            let c = BenchComparison.compare(baseline: b, current: result, threshold: threshold.map { $0 / 100 })
            print("\n" + BenchText.comparison(c), terminator: "")
            if let o = output { try write(c, to: Self.stem(o) + ".compare.json") }
            if !c.slowerKinds.isEmpty { code = 1 }
        }
        throw ExitCode(code)
    }

    static func clean(_ r: BenchRun) -> Bool {
        !r.points.contains { $0.status == .error } && r.incidents.isEmpty && r.cHelper?.error == nil
            && !(r.cHelper?.points.contains { $0.status == .error } ?? false)
    }

    static func stem(_ path: String) -> String { path.hasSuffix(".json") ? String(path.dropLast(5)) : path }
    static func svgPath(_ json: String) -> String { stem(json) + ".svg" }

    func write(_ text: String, to path: String) throws {
        do { try text.write(toFile: path, atomically: true, encoding: .utf8) } catch {
            throw UsageError("cannot write \(path): \(error.localizedDescription)")
        }
    }

    func write<T: Encodable>(_ value: T, to path: String) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try write(String(decoding: try enc.encode(value), as: UTF8.self) + "\n", to: path)
    }

    func write(_ run: BenchRun, json: String, svg: String) throws {
        try write(String(decoding: try run.encoded(), as: UTF8.self) + "\n", to: json)
        try write(BenchPlot.svg(run), to: svg)
    }

    /// One boot per kernel (bench, then the default matrix for its timing), then the comparison.
    func runVM(baseline: BenchRun?) throws -> Int32 {
        _ = try options(device: "0000:00:03.0")  // validate here, not in the guest
        let prepared = try guest.prepare()
        let repo = URL(fileURLWithPath: prepared.scripts).deletingLastPathComponent().path
        let configsDir = try ConfigLocator.find(configs)
        let outRoot = absolutePath(out)
        try FileManager.default.createDirectory(atPath: outRoot, withIntermediateDirectories: true)
        var helper: String?
        if !noCHelper {
            progress("building bench/map_bench.c")
            helper = try VMHarness.buildCHelper(benchDir: repo + "/bench", out: outRoot + "/map_bench")
        }
        let kernels = guest.kernels(kernel, fallback: ["debian:6.1", "debian:7.3"])
        var runs: [BenchRun] = []
        var code: Int32 = 0
        for k in kernels {
            let name = k.replacingOccurrences(of: ":", with: "-")
            let c = guest.config(kernel: k, outDir: outRoot + "/" + name, configsDir: configsDir, timeout: timeout, prepared: prepared)
            // Each boot in its own directory; their runs merged row by row.
            var perBoot: [BenchRun] = []
            for b in 0..<boots {
                var bc = c
                if boots > 1 { bc.outDir = c.outDir + "/boot-\(b + 1)" }
                let outcome = try VMHarness(config: bc, progress: progress).runBench(benchArgs: guestArguments, cHelper: helper)
                progressDone()
                if let r = outcome.run { perBoot.append(r) }
            }
            guard var r = BenchRun.acrossBoots(perBoot) else { continue }
            if !noMatrixTime {
                var mc = c
                mc.outDir = c.outDir + "/matrix"
                mc.timeout = 300
                let m = try VMHarness(config: mc, progress: progress).run()
                progressDone()
                r.matrix = MatrixTiming(m.bootSeconds, m.report)
                try Reporter.render(m.report, format: .table, color: false).write(toFile: mc.outDir + "/report.txt", atomically: true, encoding: .utf8)
                // Again with the edus as the only engines: bytes verified per second, NVMe vs edu.
                var ec = mc
                ec.outDir = c.outDir + "/matrix-edu"
                ec.nvme = nil
                let e = try VMHarness(config: ec, progress: progress).run()
                progressDone()
                r.eduMatrix = MatrixTiming(e.bootSeconds, e.report)
                try Reporter.render(e.report, format: .table, color: false).write(toFile: ec.outDir + "/report.txt", atomically: true, encoding: .utf8)
            }
            let text = BenchText.report(r)
            try write(r, json: c.outDir + "/bench.json", svg: c.outDir + "/bench.svg")
            try write(text, to: c.outDir + "/bench.txt")
            print(text)
            FileHandle.standardError.write(Data("\(k): bench in \(c.outDir)/bench.{json,svg,txt}\n".utf8))
            if !Self.clean(r) { code = 1 }
            runs.append(r)
        }
        var comparisons: [(BenchComparison, [BenchRun])] = []
        if let b = baseline {
            for r in runs { comparisons.append((BenchComparison.compare(baseline: b, current: r, threshold: threshold.map { $0 / 100 }), [b, r])) }
        } else if let first = runs.first {
            for r in runs.dropFirst() { comparisons.append((BenchComparison.compare(baseline: first, current: r, threshold: threshold.map { $0 / 100 }), [first, r])) }
        }
        for (c, pair) in comparisons {
            let text = BenchText.comparison(c)
            print(text)
            let stem = outRoot + "/compare-" + [pair[0], pair[1]].map { ($0.label ?? $0.kernelRelease).replacingOccurrences(of: ":", with: "-") }.joined(separator: "-vs-")
            try write(text, to: stem + ".txt")
            try write(c, to: stem + ".json")
            let backend = pair[1].settings.backends.contains("type1v2") ? "type1v2" : (pair[1].settings.backends.first ?? "type1v2")
            try write(BenchPlot.svg(series: BenchPlot.series(comparing: pair, backend: backend),
                                    title: "vfio-exerciser bench — \(pair[0].name) vs \(pair[1].name)",
                                    subtitle: "\(backend); solid: \(pair[0].label ?? pair[0].kernelRelease), dashed: \(pair[1].label ?? pair[1].kernelRelease); GiB/s = size / median call time"),
                      to: stem + ".svg")
            FileHandle.standardError.write(Data("comparison in \(stem).{txt,json,svg}\n".utf8))
            if !c.slowerKinds.isEmpty { code = 1 }
        }
        return code
    }
}
