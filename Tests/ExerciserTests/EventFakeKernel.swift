import Foundation
import XCTest
import VFIO
@testable import Exerciser

/// A page-level model of the kernel under an event, for the event executor: physical pages hold
/// a pattern or zero, the process and an optional child map page i to a physical page, and the
/// IOMMU maps page i to the page the pin took. Each event does what the kernel's mechanism does;
/// the `bug` knobs model kernels that break a promise.
final class FakeEventKernel: EventWorld {
    enum Memory { case privateAnon, shared, untouched }
    enum Bug { case none, forkSharesPinnedPage, readPinTakesZeroPage, ksmMergesPinnedPage, ksmMergesNothing }

    let pages: Int
    let memory: Memory
    var bug: Bug
    /// Physical pages: nil = zero-filled.
    var phys: [Pattern?] = []
    /// The shared zero page.
    let zeroPage = -1
    var cpu: [Int?]
    var child: [Int?]? = nil
    /// Child pages that are COW-shared with the parent (written copies become private).
    var iommu: [Int]? = nil
    var log: [String] = []
    var failOn: String?
    /// What ksm-merge left, per region ("twin", "pinned"), page by page.
    var ksm: [String: [String]] = [:]

    init(pages: Int = 4, memory: Memory, bug: Bug = .none) {
        self.pages = pages
        self.memory = memory
        self.bug = bug
        if memory == .untouched {
            cpu = Array(repeating: zeroPage, count: pages)
        } else {
            phys = Array(repeating: nil, count: pages)
            cpu = Array(0..<pages)
        }
    }

    func newPage(_ c: Pattern?) -> Int { phys.append(c); return phys.count - 1 }
    func content(_ p: Int) -> Pattern? { p == zeroPage ? nil : phys[p] }
    func step(_ s: String) throws { log.append(s); if failOn == s { throw EventStepError("injected failure in \(s)") } }

    /// A write through a process's page table: a missing or zero page faults a new one; a
    /// shared-with-the-child private page is copied first (COW).
    func write(_ table: inout [Int?], _ p: Pattern, cowAgainst other: [Int?]?) {
        for i in 0..<pages {
            if let page = table[i], page != zeroPage {
                let sharedWithOther = other?[i] == page && memory != .shared
                if sharedWithOther { table[i] = newPage(nil) }
            } else {
                table[i] = newPage(nil)
            }
            phys[table[i]!] = Pattern(p.offset + i)
        }
    }

    func read(_ table: inout [Int?], _ p: Pattern?) -> [Bool] {
        (0..<pages).map { i in
            if table[i] == nil { table[i] = zeroPage }  // a read fault maps the zero page
            let c = content(table[i]!)
            return p.map { c == Pattern($0.offset + i) } ?? (c == nil)
        }
    }

    func cpuWrite(_ p: Pattern) throws { try step("cpuWrite"); write(&cpu, p, cowAgainst: child) }
    func map() -> Outcome {
        log.append("map")
        if memory == .untouched && bug != .readPinTakesZeroPage {
            cpu = cpu.map { _ in newPage(nil) }  // unshare before a R/O long-term pin
        }
        iommu = cpu.map { $0 ?? newPage(nil) }
        return .ok
    }
    func deviceWrite(_ p: Pattern) throws {
        try step("deviceWrite")
        for (i, page) in iommu!.enumerated() where page != zeroPage { phys[page] = Pattern(p.offset + i) }
    }
    func deviceReads(_ p: Pattern?) throws -> [Bool]? {
        try step("deviceReads")
        return iommu!.enumerated().map { i, page in p.map { content(page) == Pattern($0.offset + i) } ?? (content(page) == nil) }
    }
    func cpuReads(_ p: Pattern?) -> [Bool] { log.append("cpuReads"); return read(&cpu, p) }
    func apply(_ e: CaseEvent) -> (result: String, fill: Pattern?) {
        log.append("apply")
        switch e {
        case .madvDontneed, .remapAnon:
            if memory != .shared || e == .remapAnon { cpu = Array(repeating: nil, count: pages) }
            return ("ok", nil)
        case .vaddrOtherMemfd:
            cpu = (0..<pages).map { newPage(Pattern(Pattern.fill.offset + $0)) }
            return ("ok", .fill)
        case .ksmMerge:
            // ksm_madvise ignores shared vmas; the twins of a private kind merge with each other.
            let merges = memory != .shared && bug != .ksmMergesNothing
            ksm["twin"] = Array(repeating: merges ? "merged" : "unmerged", count: pages)
            ksm["pinned"] = Array(repeating: "kept", count: pages)
            if merges && bug == .ksmMergesPinnedPage {
                // write_protect_page without its refcount check: the process now maps the KSM
                // page (a copy), the device keeps the pinned one.
                cpu = cpu.map { $0.map { newPage(content($0)) } }
                ksm["pinned"] = Array(repeating: "merged", count: pages)
            }
            return ("ok", nil)
        default:
            return ("ok", nil)
        }
    }
    func undo(_ e: CaseEvent) -> String? { log.append("undo"); return nil }
    func fork() throws {
        try step("fork")
        child = cpu
        // The kernel copies maybe-pinned private pages for the child at fork (70e806e4e645);
        // the buggy kernel shares them COW, so the parent's next write moves it off the pin.
        if memory == .privateAnon && bug != .forkSharesPinnedPage {
            child = cpu.map { $0.map { newPage(content($0)) } }
        }
    }
    func childWrite(_ p: Pattern) throws {
        try step("childWrite")
        var c = child!
        write(&c, p, cowAgainst: cpu)
        child = c
    }
    func childReads(_ p: Pattern?) throws -> [Bool] {
        try step("childReads")
        var c = child!
        defer { child = c }
        return read(&c, p)
    }
    func endChild() -> String? { log.append("endChild"); child = nil; return nil }
    func unmap() -> String? { log.append("unmap"); iommu = nil; return nil }
    func pageStates(_ region: String) -> [String] { log.append("pageStates"); return ksm[region] ?? [] }
}
