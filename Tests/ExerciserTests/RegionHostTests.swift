import XCTest
import Foundation
@testable import Exerciser
@testable import VFIO
import CVFIO

/// Builds every region backing on this host (no VFIO needed) and checks, from /proc/self/maps
/// and /proc/self/smaps, that the memory is what the kind promises, and that release() unmaps it.
///
/// Where a machine fact decides the branch (free hugepages, THP mode, memfd_secret, an ext
/// filesystem) each branch asserts its own outcome: the region built with the right properties,
/// or a RegionUnavailable naming what is missing. Nothing is skipped.
final class RegionHostTests: XCTestCase {

    // MARK: - /proc reader

    /// One VMA of /proc/self/maps or /proc/self/smaps.
    struct VMA: CustomStringConvertible {
        var lo: UInt64
        var hi: UInt64  // exclusive
        var perms: String  // "rw-p"
        var fields: [String: String] = [:]  // smaps only

        var description: String { String(format: "%llx-%llx %@", lo, hi, perms) }

        /// "1234 kB" → 1234.
        func kB(_ key: String) -> Int? {
            fields[key].flatMap { $0.split(separator: " ").first }.flatMap { Int($0) }
        }
    }

    /// Read buffer allocated in setUp, before any region exists: reading /proc must not itself
    /// mmap (malloc does for large buffers) into a range a test has just released.
    private var procBuffer: UnsafeMutableRawPointer!
    private static let procCapacity = 64 << 20

    override func setUp() {
        super.setUp()
        procBuffer = UnsafeMutableRawPointer.allocate(byteCount: Self.procCapacity, alignment: 4096)
    }

    override func tearDown() {
        procBuffer.deallocate()
        procBuffer = nil
        super.tearDown()
    }

    /// Reads a /proc file into the preallocated buffer; returns its length.
    private func readProc(_ path: String) -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            XCTFail("cannot open \(path)")
            return 0
        }
        defer { close(fd) }
        var n = 0
        while n < Self.procCapacity {
            let r = read(fd, procBuffer + n, Self.procCapacity - n)
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { break }
            n += r
        }
        XCTAssertLessThan(n, Self.procCapacity, "\(path) did not fit the read buffer")
        return n
    }

    private static func hexValue(_ c: UInt8) -> UInt64? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt64(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt64(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt64(c - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    /// A VMA header line "lo-hi perms ..." → (lo, hi, perms); nil for smaps field lines.
    private static func header(_ line: UnsafeRawBufferPointer) -> (UInt64, UInt64, String)? {
        var i = 0
        func hex() -> UInt64? {
            var v: UInt64 = 0
            var digits = 0
            while i < line.count, let d = hexValue(line[i]) {
                v = v << 4 | d
                digits += 1
                i += 1
            }
            return digits > 0 && digits <= 16 ? v : nil
        }
        guard let lo = hex(), i < line.count, line[i] == UInt8(ascii: "-") else { return nil }
        i += 1
        guard let hi = hex(), i < line.count, line[i] == UInt8(ascii: " "), i + 5 <= line.count else { return nil }
        let perms = String(decoding: UnsafeRawBufferPointer(rebasing: line[(i + 1)..<(i + 5)]), as: UTF8.self)
        return (lo, hi, perms)
    }

    /// The VMAs that overlap [lo, hi), from maps (perms only) or smaps (with fields).
    /// Parses the raw buffer in place and allocates only for the VMAs it returns.
    func vmas(overlapping lo: UInt64, _ hi: UInt64, smaps: Bool = false) -> [VMA] {
        let n = readProc(smaps ? "/proc/self/smaps" : "/proc/self/maps")
        let all = UnsafeRawBufferPointer(start: procBuffer, count: n)
        var out: [VMA] = []
        var current: VMA?
        var start = 0
        while start < n {
            var end = start
            while end < n && all[end] != UInt8(ascii: "\n") { end += 1 }
            let line = UnsafeRawBufferPointer(rebasing: all[start..<end])
            start = end + 1
            if let (a, b, perms) = Self.header(line) {
                if let c = current { out.append(c) }
                current = a < hi && b > lo ? VMA(lo: a, hi: b, perms: perms) : nil
                continue
            }
            guard current != nil, let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let key = String(decoding: UnsafeRawBufferPointer(rebasing: line[..<colon]), as: UTF8.self)
            let value = String(decoding: UnsafeRawBufferPointer(rebasing: line[(colon + 1)...]), as: UTF8.self)
            current!.fields[key] = value.trimmingCharacters(in: .whitespaces)
        }
        if let c = current { out.append(c) }
        return out.sorted { $0.lo < $1.lo }
    }

    /// True when the VMAs cover every byte of [lo, hi) without a gap.
    static func covers(_ vmas: [VMA], _ lo: UInt64, _ hi: UInt64) -> Bool {
        var at = lo
        for v in vmas.sorted(by: { $0.lo < $1.lo }) {
            if v.lo > at { return false }
            at = max(at, v.hi)
            if at >= hi { return true }
        }
        return at >= hi
    }

    /// Every byte of [lo, hi) is mapped, and every VMA covering it has `perms`.
    func assertMapped(_ lo: UInt64, _ hi: UInt64, perms: String, _ what: String,
                      file: StaticString = #filePath, line: UInt = #line) {
        let v = vmas(overlapping: lo, hi)
        XCTAssertTrue(Self.covers(v, lo, hi), "\(what): [\(hex(lo)), \(hex(hi))) not fully mapped: \(v)", file: file, line: line)
        for m in v {
            XCTAssertEqual(m.perms, perms, "\(what): \(m) should be \(perms)", file: file, line: line)
        }
    }

    func assertUnmapped(_ lo: UInt64, _ hi: UInt64, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let v = vmas(overlapping: lo, hi)
        XCTAssertTrue(v.isEmpty, "\(what): [\(hex(lo)), \(hex(hi))) should have no mapping, found \(v)", file: file, line: line)
    }

    func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    // MARK: - Building

    static let ctxFsCandidates = ["/tmp", "/work", "/"]

    /// A directory on ext2/3/4 on this machine, if any of the candidates is one.
    static var extDir: String? {
        ctxFsCandidates.first { Mem.fsMagic($0) == Mem.ext2to4Magic }
    }

    static func context(fsDir: String? = nil, tmpfsDir: String = "/dev/shm") -> RegionContext {
        RegionContext(bars: [], fsDir: fsDir ?? extDir ?? "/dev/shm", tmpfsDir: tmpfsDir)
    }

    func build(_ kind: CaseKind, size: UInt64? = nil, instance: String? = nil,
               context: RegionContext = RegionHostTests.context()) throws -> Region {
        guard let backing = Backings.backing(for: kind) else {
            XCTFail("no backing for \(kind.rawValue)")
            throw RegionUnavailable("no backing")
        }
        XCTAssertEqual(type(of: backing).kind, kind, "Backings.backing(for:) returned the wrong type")
        return try backing.build(size: size ?? kind.defaultSize, instance: instance, context: context)
    }

    /// Releases the region and checks release reported success and the range is gone.
    func releaseAndCheck(_ r: Region, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let lo = r.vaddr, hi = r.vaddr + r.size
        XCTAssertTrue(r.release(), "\(what): release() reported a failed clean-up", file: file, line: line)
        assertUnmapped(lo, hi, "\(what) after release()", file: file, line: line)
    }

    func freeHugepages(_ pageKB: Int) -> Int? {
        (try? String(contentsOfFile: "/sys/kernel/mm/hugepages/hugepages-\(pageKB)kB/free_hugepages", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    // MARK: - Registry

    /// Every kind this file checks, one test each below.
    static let checkedKinds: Set<CaseKind> = [
        .anonPrivate, .anonUntouched, .anonShared, .memfd, .memfdHugetlb2M, .hugetlb2M, .hugetlb1G, .thp,
        .tmpfsFile, .fsFile, .readonlyWrite, .readonlyRead, .protNone, .hole, .partialHole, .bar, .barPlusAnon,
        .mlocked, .memfdSecret, .mixedmapSpecial, .mixedmapPage, .fsdaxFile, .devdax, .memfdMapFile, .memfdHugetlbMapFile, .peerBar, .peerBarDmabuf,
    ]

    func testRegistryCoversEveryRegionKindOnce() {
        let kinds = Backings.all.map { $0.kind }
        XCTAssertEqual(kinds.count, Set(kinds).count, "a kind has two backings: \(kinds)")
        XCTAssertEqual(Set(kinds), Set(CaseKind.allCases.filter { !$0.isEdge }), "every region kind needs exactly one backing")
        XCTAssertEqual(Set(kinds), Self.checkedKinds, "a backing without a host test here (or a test for a removed kind)")
        for k in CaseKind.allCases {
            XCTAssertEqual(Backings.backing(for: k) == nil, k.isEdge, "\(k.rawValue)")
        }
    }

    // MARK: - Ordinary memory

    func testAnonPrivate() throws {
        let size: UInt64 = 64 << 10
        let r = try build(.anonPrivate, size: size)
        XCTAssertEqual(r.size, size)
        XCTAssertEqual(r.access, .readWrite)
        assertMapped(r.vaddr, r.vaddr + size, perms: "rw-p", "anon-private")
        // Touched: every page is resident.
        let v = vmas(overlapping: r.vaddr, r.vaddr + size, smaps: true)
        XCTAssertGreaterThanOrEqual(v.compactMap { $0.kB("Rss") }.reduce(0, +), Int(size >> 10), "anon-private was not touched: \(v.map(\.fields))")
        releaseAndCheck(r, "anon-private")
    }

    func testAnonUntouched() throws {
        let size: UInt64 = 64 << 10
        let r = try build(.anonUntouched, size: size)
        XCTAssertEqual(r.size, size)
        XCTAssertEqual(r.access, .readWrite)
        XCTAssertEqual(r.initialFill, 0)
        XCTAssertEqual(r.properties["zero_page_read"], "yes")
        assertMapped(r.vaddr, r.vaddr + size, perms: "rw-p", "anon-untouched")
        let bytes = UnsafeRawBufferPointer(start: r.pointer, count: Int(size))
        XCTAssertTrue(bytes.allSatisfy { $0 == 0 }, "anon-untouched must read as zeroes")
        releaseAndCheck(r, "anon-untouched")
    }

    func testAnonShared() throws {
        let size: UInt64 = 64 << 10
        let r = try build(.anonShared, size: size)
        XCTAssertEqual(r.size, size)
        XCTAssertEqual(r.access, .readWrite)
        assertMapped(r.vaddr, r.vaddr + size, perms: "rw-s", "anon-shared")
        releaseAndCheck(r, "anon-shared")
    }

    func testMemfd() throws {
        let size: UInt64 = 64 << 10
        let r = try build(.memfd, size: size)
        XCTAssertEqual(r.size, size)
        XCTAssertEqual(r.access, .readWrite)
        assertMapped(r.vaddr, r.vaddr + size, perms: "rw-s", "memfd")
        let v = vmas(overlapping: r.vaddr, r.vaddr + size, smaps: true)
        XCTAssertEqual(v.first?.kB("KernelPageSize"), PageSize.base >> 10, "shmem memfd uses base pages")
        XCTAssertEqual(r.properties["kernel_page_size"], "\(PageSize.base >> 10) kB")
        releaseAndCheck(r, "memfd")
    }

    /// The IOMMU gets the fd, the CPU the mapping: both must be the same pages.
    func testMapFileKindsHandTheSameMemfdToTheIOMMU() throws {
        for (kind, size) in [(CaseKind.memfdMapFile, UInt64(64 << 10)), (.memfdHugetlbMapFile, UInt64(2 << 20))] {
            if kind == .memfdHugetlbMapFile && (Hugepages.free(pageKB: 2048) ?? 0) < 1 {
                XCTAssertThrowsError(try build(kind, size: size), "no free 2M hugepage: must say so")
                continue
            }
            let r = try build(kind, size: size)
            let f = try XCTUnwrap(r.file, kind.rawValue)
            XCTAssertEqual(f.offset, 0)
            let target = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(f.fd)")
            XCTAssertTrue(target.hasPrefix("/memfd:"), target)
            r.pointer.storeBytes(of: 0x5A, toByteOffset: Int(size) - 1, as: UInt8.self)
            var b: UInt8 = 0
            XCTAssertEqual(pread(f.fd, &b, 1, off_t(size) - 1), 1)
            XCTAssertEqual(b, 0x5A, "\(kind.rawValue): the fd and the mapping are different memory")
            releaseAndCheck(r, kind.rawValue)
        }
    }

    func testMlocked() throws {
        let size: UInt64 = 64 << 10
        let r = try build(.mlocked, size: size)
        XCTAssertEqual(r.size, size)
        XCTAssertEqual(r.access, .readWrite)
        assertMapped(r.vaddr, r.vaddr + size, perms: "rw-p", "mlocked")
        let v = vmas(overlapping: r.vaddr, r.vaddr + size, smaps: true)
        XCTAssertFalse(v.isEmpty)
        for m in v {
            XCTAssertGreaterThan(m.kB("Locked") ?? 0, 0, "mlocked: \(m) shows no Locked memory: \(m.fields["Locked"] ?? "no Locked field")")
        }
        XCTAssertGreaterThanOrEqual(v.compactMap { $0.kB("Locked") }.reduce(0, +), Int(size >> 10), "all of the region is locked")
        releaseAndCheck(r, "mlocked")
    }

    // MARK: - Files

    func testTmpfsFile() throws {
        let size: UInt64 = 64 << 10
        if Mem.fsMagic("/dev/shm") == Mem.tmpfsMagic {
            let r = try build(.tmpfsFile, size: size)
            XCTAssertEqual(r.size, size)
            XCTAssertEqual(r.access, .readWrite)
            assertMapped(r.vaddr, r.vaddr + size, perms: "rw-s", "tmpfs-file")
            releaseAndCheck(r, "tmpfs-file")
        } else {
            XCTAssertThrowsError(try build(.tmpfsFile, size: size)) { e in
                XCTAssertTrue((e as? RegionUnavailable)?.reason.contains("tmpfs") == true, "\(e)")
            }
        }
    }

    func testTmpfsFileRefusesANonTmpfsDirectory() throws {
        // / is never tmpfs on a machine that runs this build.
        XCTAssertNotEqual(Mem.fsMagic("/"), Mem.tmpfsMagic)
        XCTAssertThrowsError(try build(.tmpfsFile, context: Self.context(tmpfsDir: "/"))) { e in
            let reason = (e as? RegionUnavailable)?.reason ?? "not a RegionUnavailable: \(e)"
            XCTAssertTrue(reason.contains("tmpfs"), reason)
        }
    }

    func testFSFile() throws {
        let size: UInt64 = 64 << 10
        if let dir = Self.extDir {
            let r = try build(.fsFile, size: size, context: Self.context(fsDir: dir))
            XCTAssertEqual(r.size, size)
            XCTAssertEqual(r.access, .readWrite)
            XCTAssertEqual(r.properties["filesystem"], "ext2/3/4")
            assertMapped(r.vaddr, r.vaddr + size, perms: "rw-s", "fs-file on \(dir)")
            // The backing file is unlinked at once: nothing is left in the directory.
            let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: dir))?.filter { $0.hasPrefix(".vfio-exerciser-\(getpid())-") } ?? []
            XCTAssertEqual(leftovers, [], "fs-file left its file in \(dir)")
            releaseAndCheck(r, "fs-file")
        } else {
            HostPrecondition.fsFile.missing("none of \(Self.ctxFsCandidates) is on ext2/3/4")
            XCTAssertThrowsError(try build(.fsFile, size: size)) { e in
                let reason = (e as? RegionUnavailable)?.reason ?? "not a RegionUnavailable: \(e)"
                XCTAssertTrue(reason.contains("ext2"), reason)
            }
        }
    }

    func testFSFileRefusesTmpfs() throws {
        XCTAssertEqual(Mem.fsMagic("/dev/shm"), Mem.tmpfsMagic, "/dev/shm is tmpfs on this host")
        XCTAssertThrowsError(try build(.fsFile, context: Self.context(fsDir: "/dev/shm"))) { e in
            let reason = (e as? RegionUnavailable)?.reason ?? "not a RegionUnavailable: \(e)"
            XCTAssertTrue(reason.contains("ext2"), reason)
        }
    }

    // MARK: - The test module's VM_MIXEDMAP vmas (kmod/; loaded in the VM, not on the host)

    func testMixedmapKindsNeedTheTestModule() throws {
        for kind in [CaseKind.mixedmapSpecial, .mixedmapPage] {
            let size: UInt64 = 64 << 10
            if FileManager.default.fileExists(atPath: "/dev/vfio_exerciser_test") {
                let r = try build(kind, size: size)
                XCTAssertTrue(r.properties["vma"]?.hasPrefix("VM_MIXEDMAP") == true, "\(r.properties)")
                assertMapped(r.vaddr, r.vaddr + size, perms: "rw-s", kind.rawValue)
                releaseAndCheck(r, kind.rawValue)
            } else {
                XCTAssertThrowsError(try build(kind, size: size)) { e in
                    let reason = (e as? RegionUnavailable)?.reason ?? "not a RegionUnavailable: \(e)"
                    XCTAssertEqual(reason, "/dev/vfio_exerciser_test: ENOENT (the test module vfio_exerciser_test is not loaded)")
                }
            }
        }
    }

    func testPeerBARNeedsAPeerDevice() {
        for kind in [CaseKind.peerBar, .peerBarDmabuf] {
            XCTAssertThrowsError(try build(kind)) { e in
                XCTAssertEqual((e as? RegionUnavailable)?.reason, "no peer device (run --peer BDF)", kind.rawValue)
            }
        }
    }

    // MARK: - Persistent memory (set up in the VM on memmap= pmem; refused with a reason elsewhere)

    func testFsdaxRefusesAFilesystemWithoutDax() throws {
        XCTAssertEqual(Mem.mountOptions("/dev/shm/x")?.contains("dax"), false)
        XCTAssertNotNil(Mem.mountOptions("/"), "/ is a mount point")
        let ctx = RegionContext(bars: [], fsDir: "/dev/shm", tmpfsDir: "/dev/shm", fsdaxDir: "/dev/shm")
        XCTAssertThrowsError(try build(.fsdaxFile, context: ctx)) { e in
            XCTAssertEqual((e as? RegionUnavailable)?.reason,
                           "/dev/shm is not mounted with -o dax (the test VM puts ext4 -o dax on pmem there; set --fsdax-dir)")
        }
        let missing = RegionContext(bars: [], fsDir: "/dev/shm", tmpfsDir: "/dev/shm", fsdaxDir: "/nonexistent-dax")
        XCTAssertThrowsError(try build(.fsdaxFile, context: missing)) { e in
            XCTAssertEqual((e as? RegionUnavailable)?.reason, "/nonexistent-dax does not exist (set --fsdax-dir)")
        }
    }

    func testDevdaxMapsAtTheDeviceAlignmentOrSaysWhyNot() throws {
        if let dev = Devdax.first() {
            let r = try build(.devdax)
            XCTAssertEqual(r.vaddr % (2 << 20), 0, "device-dax refuses a vma off its alignment")
            XCTAssertEqual(r.properties["device"], dev)
            releaseAndCheck(r, "devdax")
        } else {
            XCTAssertThrowsError(try build(.devdax)) { e in
                XCTAssertEqual((e as? RegionUnavailable)?.reason,
                               "no device-dax device (/sys/bus/dax/devices lists none with a /dev node; the test VM makes one on pmem)")
            }
        }
        let ctx = RegionContext(bars: [], fsDir: "/dev/shm", tmpfsDir: "/dev/shm", devdax: "/dev/nonexistent-dax0.0")
        XCTAssertThrowsError(try build(.devdax, size: 2 << 20, context: ctx)) { e in
            XCTAssertEqual((e as? RegionUnavailable)?.reason, "/dev/nonexistent-dax0.0: ENOENT")
        }
    }

    // MARK: - Protections

    func checkReadOnly(_ kind: CaseKind) throws {
        let size: UInt64 = 64 << 10
        let r = try build(kind, size: size)
        XCTAssertEqual(r.size, size)
        XCTAssertEqual(r.access, .readOnly)
        assertMapped(r.vaddr, r.vaddr + size, perms: "r--p", kind.rawValue)
        guard let fill = r.initialFill else {
            XCTFail("\(kind.rawValue): a read-only region must say what it holds")
            return
        }
        let bytes = UnsafeRawBufferPointer(start: r.pointer, count: Int(size))
        XCTAssertTrue(bytes.allSatisfy { $0 == fill }, "\(kind.rawValue) does not hold its fill byte \(fill)")
        releaseAndCheck(r, kind.rawValue)
    }

    func testReadonlyWrite() throws { try checkReadOnly(.readonlyWrite) }
    func testReadonlyRead() throws { try checkReadOnly(.readonlyRead) }

    func testProtNone() throws {
        let size: UInt64 = 64 << 10
        let r = try build(.protNone, size: size)
        XCTAssertEqual(r.size, size)
        if case .none = r.access {} else { XCTFail("prot-none access \(r.access)") }
        assertMapped(r.vaddr, r.vaddr + size, perms: "---p", "prot-none")
        releaseAndCheck(r, "prot-none")
    }

    // MARK: - Holes

    func testHole() throws {
        let size: UInt64 = 64 << 10
        let r = try build(.hole, size: size)
        XCTAssertEqual(r.size, size)
        if case .none = r.access {} else { XCTFail("hole access \(r.access)") }
        XCTAssertNotEqual(r.vaddr, 0)
        XCTAssertEqual(r.vaddr % UInt64(PageSize.base), 0)
        assertUnmapped(r.vaddr, r.vaddr + size, "hole")
        XCTAssertEqual(r.properties["vma_present"], "no", "the hole's own check found a vma in it")
        XCTAssertTrue(r.release())
        assertUnmapped(r.vaddr, r.vaddr + size, "hole after release()")
    }

    func testPartialHole() throws {
        let size: UInt64 = 64 << 10
        let r = try build(.partialHole, size: size)
        XCTAssertEqual(r.size, size)
        if case .none = r.access {} else { XCTFail("partial-hole access \(r.access)") }
        let mid = r.vaddr + size / 2
        assertMapped(r.vaddr, mid, perms: "rw-p", "partial-hole first half")
        assertUnmapped(mid, r.vaddr + size, "partial-hole second half")
        XCTAssertEqual(r.properties["second_half_vma"], "no")
        releaseAndCheck(r, "partial-hole")
    }

    // MARK: - Huge pages

    /// Free pages decide the branch: built with `pageKB` pages, or unavailable naming them.
    func checkHugetlb(_ kind: CaseKind, pageKB: Int, perms: String) {
        let size = UInt64(pageKB) << 10
        let free = freeHugepages(pageKB)
        let name = pageKB >= (1 << 20) ? "1G" : "2M"
        do {
            let r = try build(kind, size: size)
            XCTAssertGreaterThanOrEqual(free ?? 0, 1, "\(kind.rawValue) built although free_hugepages is \(free.map(String.init) ?? "absent")")
            XCTAssertEqual(r.size, size)
            XCTAssertEqual(r.access, .readWrite)
            XCTAssertEqual(r.vaddr % size, 0, "a \(name) hugetlb mapping is \(name) aligned")
            assertMapped(r.vaddr, r.vaddr + size, perms: perms, kind.rawValue)
            let v = vmas(overlapping: r.vaddr, r.vaddr + size, smaps: true)
            XCTAssertFalse(v.isEmpty)
            for m in v { XCTAssertEqual(m.fields["KernelPageSize"], "\(pageKB) kB", "\(kind.rawValue): \(m)") }
            XCTAssertEqual(r.properties["kernel_page_size"], "\(pageKB) kB")
            releaseAndCheck(r, kind.rawValue)
        } catch let e as RegionUnavailable {
            (pageKB >= (1 << 20) ? HostPrecondition.hugetlb1G : .hugetlb2M).missing("\(kind.rawValue): \(e.reason)")
            XCTAssertLessThan(free ?? 0, 1, "\(kind.rawValue) unavailable although \(free ?? 0) \(name) pages are free: \(e.reason)")
            XCTAssertTrue(e.reason.contains("hugepage"), "reason must name the missing hugepages: \(e.reason)")
            XCTAssertTrue(e.reason.contains("\(pageKB / 1024)M") || e.reason.contains(name),
                          "reason must name the page size: \(e.reason)")
            if free != nil { XCTAssertTrue(e.reason.contains("\(free!) free"), "reason must say how many are free: \(e.reason)") }
        } catch {
            XCTFail("\(kind.rawValue): unexpected error \(error)")
        }
    }

    func testHugetlb2M() { checkHugetlb(.hugetlb2M, pageKB: 2048, perms: "rw-p") }
    func testMemfdHugetlb2M() { checkHugetlb(.memfdHugetlb2M, pageKB: 2048, perms: "rw-s") }
    func testHugetlb1G() { checkHugetlb(.hugetlb1G, pageKB: 1 << 20, perms: "rw-p") }

    func testTHP() throws {
        let size: UInt64 = 2 << 20
        let mode = (try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8)) ?? ""
        if mode.isEmpty || mode.contains("[never]") {
            HostPrecondition.thp.missing("transparent_hugepage/enabled is \(mode.isEmpty ? "absent" : mode)")
            XCTAssertThrowsError(try build(.thp, size: size)) { e in
                let reason = (e as? RegionUnavailable)?.reason ?? "not a RegionUnavailable: \(e)"
                XCTAssertTrue(reason.contains("transparent"), reason)
            }
            return
        }
        let r = try build(.thp, size: size)
        XCTAssertEqual(r.size, size)
        XCTAssertEqual(r.access, .readWrite)
        XCTAssertEqual(r.vaddr % (2 << 20), 0, "thp region must be 2 MiB aligned")
        assertMapped(r.vaddr, r.vaddr + size, perms: "rw-p", "thp")
        let v = vmas(overlapping: r.vaddr, r.vaddr + size, smaps: true)
        let huge = v.compactMap { $0.kB("AnonHugePages") }.reduce(0, +)
        let flag = r.properties["huge_page"]
        XCTAssertTrue(flag == "yes" || flag == "no", "huge_page = \(flag ?? "nil")")
        XCTAssertEqual(flag, huge > 0 ? "yes" : "no", "huge_page disagrees with smaps AnonHugePages \(huge) kB")
        XCTAssertNotNil(r.properties["anon_huge_pages"])
        releaseAndCheck(r, "thp")
    }

    // MARK: - Secret memory

    func testMemfdSecret() throws {
        let size: UInt64 = 64 << 10
        do {
            let r = try build(.memfdSecret, size: size)
            XCTAssertEqual(r.size, size)
            XCTAssertEqual(r.access, .readWrite)
            assertMapped(r.vaddr, r.vaddr + size, perms: "rw-s", "memfd-secret")
            releaseAndCheck(r, "memfd-secret")
        } catch let e as RegionUnavailable {
            HostPrecondition.memfdSecret.missing(e.reason)
            XCTAssertTrue(e.reason.contains("memfd_secret"), e.reason)
        }
    }

    // MARK: - Device kinds without a device

    func testBARNeedsADevice() {
        for instance in ["BAR0", "BAR2", nil] as [String?] {
            XCTAssertThrowsError(try build(.bar, instance: instance, context: RegionContext(bars: [], fsDir: "", tmpfsDir: ""))) { e in
                guard let u = e as? RegionUnavailable else { return XCTFail("not a RegionUnavailable: \(e)") }
                XCTAssertTrue(u.reason.contains(instance ?? "BAR"), u.reason)
            }
        }
    }

    func testBARPlusAnonNeedsADevice() {
        XCTAssertThrowsError(try build(.barPlusAnon, context: RegionContext(bars: [], fsDir: "", tmpfsDir: ""))) { e in
            guard let u = e as? RegionUnavailable else { return XCTFail("not a RegionUnavailable: \(e)") }
            XCTAssertTrue(u.reason.contains("BAR"), u.reason)
        }
    }

    // MARK: - The reader itself

    /// The parser must see a mapping this test makes and stop seeing it after munmap, or every
    /// "unmapped" assertion above would pass vacuously.
    func testProcReaderSeesAndLosesAMapping() throws {
        let len = 3 * PageSize.base
        let p = try XCTUnwrap(mmap(nil, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        XCTAssertNotEqual(p, MAP_FAILED)
        let lo = UInt64(UInt(bitPattern: p)), hi = lo + UInt64(len)
        let v = vmas(overlapping: lo, hi)
        XCTAssertTrue(Self.covers(v, lo, hi), "\(v)")
        XCTAssertEqual(v.map(\.perms), ["r--p"])
        let s = vmas(overlapping: lo, hi, smaps: true)
        XCTAssertNotNil(s.first?.kB("Size"))
        XCTAssertGreaterThanOrEqual(s.first?.kB("Size") ?? 0, len >> 10)
        // Split it: the middle page gone leaves two vmas and a gap.
        munmap(p + PageSize.base, PageSize.base)
        XCTAssertFalse(Self.covers(vmas(overlapping: lo, hi), lo, hi))
        XCTAssertTrue(vmas(overlapping: lo + UInt64(PageSize.base), lo + 2 * UInt64(PageSize.base)).isEmpty)
        munmap(p, len)
        XCTAssertTrue(vmas(overlapping: lo, hi).isEmpty)
    }

    func testCoversHelper() {
        let a = VMA(lo: 0x1000, hi: 0x3000, perms: "rw-p"), b = VMA(lo: 0x3000, hi: 0x5000, perms: "rw-p")
        XCTAssertTrue(Self.covers([b, a], 0x1000, 0x5000))
        XCTAssertTrue(Self.covers([a], 0x2000, 0x3000))
        XCTAssertFalse(Self.covers([a], 0x2000, 0x3001))
        XCTAssertFalse(Self.covers([a, VMA(lo: 0x4000, hi: 0x5000, perms: "rw-p")], 0x1000, 0x5000))
        XCTAssertFalse(Self.covers([], 0x1000, 0x2000))
    }
}
