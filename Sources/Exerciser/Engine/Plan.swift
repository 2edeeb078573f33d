import Foundation
import VFIO

/// One case as it will run: a template bound to a backend, phase and (for BARs) instance.
public struct PlannedCase: Sendable, Equatable {
    public var backend: BackendKind
    public var phase: Phase
    public var kind: CaseKind
    public var instance: String?
    public var size: UInt64
    public var flags: [String]
    /// A kind × event case (Events/): the event applied after the map.
    public var event: CaseEvent? = nil

    public var id: String {
        var s = "\(backend.rawValue)/\(kind.rawValue)"
        if let i = instance { s += "/\(i)" }
        if flags != kind.defaultFlags { s += "[" + (flags.isEmpty ? "none" : flags.map { String($0.prefix(1)) }.joined()) + "]" }
        if kind.isEdge { s += "@\(phase.rawValue)" }
        if let e = event { s += "+\(e.rawValue)" }
        return s
    }

    public var dmaFlags: DMAFlags {
        var f: DMAFlags = []
        if flags.contains("read") { f.insert(.read) }
        if flags.contains("write") { f.insert(.write) }
        return f
    }
}

/// A configuration or environment problem: one line, exit 2, nothing left behind.
public struct UsageError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

public enum Planner {
    /// Memory BARs of a PCI device from sysfs `resource` (no device open needed), as BAR<n>.
    public static func memoryBARs(pciAddress: String) -> [String] {
        let path = "\(PCIDevice.sysfs)/\(PCIDevice.normalise(pciAddress))/resource"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        var out: [String] = []
        for (i, line) in text.split(whereSeparator: \.isNewline).prefix(6).enumerated() {
            let f = line.split(separator: " ").compactMap { UInt64($0.dropFirst(2), radix: 16) }
            guard f.count == 3 else { continue }
            let (start, end, flags) = (f[0], f[1], f[2])
            if end > start && flags & 0x200 != 0 { out.append("BAR\(i)") }
        }
        return out
    }

    /// Expands the matrix: every backend, pre-device phase first, BAR kinds once per BAR.
    public static func plan(_ m: Matrix, backends: [BackendKind]?, kinds: [CaseKind]?, bars: [String]) -> [PlannedCase] {
        var out: [PlannedCase] = []
        for b in m.backends where backends?.contains(b) ?? true {
            for phase in Phase.allCases {
                for t in m.cases where t.phases.contains(phase) && (kinds?.contains(t.kind) ?? true) && (t.backends?.contains(b) ?? true)
                    && t.kind.runs(on: b) {
                    let instances: [String?] = t.kind == .bar ? (bars.isEmpty ? ["BAR?"] : bars) : [nil]
                    for inst in instances {
                        out.append(PlannedCase(backend: b, phase: phase, kind: t.kind, instance: inst, size: t.size, flags: t.flags))
                    }
                }
            }
        }
        return out
    }
}

/// Hands out IOVAs inside the valid ranges, aligned so huge pages can map as superpages.
public struct IOVAAllocator {
    public var ranges: [IOVARange]
    public var next: UInt64

    public init(ranges: [IOVARange], start: UInt64 = 1 << 32) {
        self.ranges = ranges.isEmpty ? [IOVARange(start: 0, end: (1 << 48) - 1)] : ranges
        self.next = start
    }

    public static func alignment(for size: UInt64) -> UInt64 {
        var a: UInt64 = 2 << 20
        while a < size && a < (1 << 30) { a <<= 1 }
        return a
    }

    /// Rounds up to a power-of-two alignment; nil past the top of the address space.
    static func alignUp(_ v: UInt64, _ align: UInt64) -> UInt64? {
        let (sum, overflow) = v.addingReportingOverflow(align - 1)
        return overflow ? nil : sum & ~(align - 1)
    }

    public mutating func allocate(_ size: UInt64) -> UInt64? {
        let align = Self.alignment(for: size)
        let len = max(size, 1)
        guard var cand = Self.alignUp(next, align) else { return nil }
        for r in ranges.sorted(by: { $0.start < $1.start }) where r.end >= cand {
            if cand < r.start { guard let c = Self.alignUp(r.start, align) else { return nil }; cand = c }
            if r.contains(cand, size: len) {
                let (end, overflow) = cand.addingReportingOverflow(max(size, 4096))
                next = overflow ? UInt64.max : end
                return cand
            }
        }
        return nil
    }

    /// The first IOVA the kernel must refuse: in a gap between ranges, or past the last.
    public func outside(size: UInt64) -> UInt64? {
        let sorted = ranges.sorted { $0.start < $1.start }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.end < UInt64.max && b.start > a.end + 1 {
            if let gap = Self.alignUp(a.end + 1, 0x1000), gap < b.start { return gap }
        }
        if let last = sorted.last, last.end < UInt64.max, let past = Self.alignUp(last.end + 1, 0x1000),
           past <= UInt64.max - size {
            return past
        }
        return nil
    }
}
