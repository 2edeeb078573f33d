import Foundation

/// A developer's built kernel tree (in-tree or `O=` output directory) laid out like a fetched
/// kernel: vmlinuz, config, kver, its modules installed into the cache, and `build` pointing at
/// the tree so the test module builds against it.
enum KernelTree {
    /// What a built tree must have, checked before anything is run.
    static func validate(_ tree: String) throws(UsageError) -> (release: String, image: String) {
        let fm = FileManager.default
        guard fm.fileExists(atPath: tree + "/Makefile") else { throw UsageError("\(tree) is not a kernel tree (no Makefile)") }
        guard fm.fileExists(atPath: tree + "/.config") else { throw UsageError("\(tree) has no .config (configure and build it first)") }
        let image = tree + "/arch/x86/boot/bzImage"
        guard fm.fileExists(atPath: image) else { throw UsageError("\(tree) has no arch/x86/boot/bzImage (run make first)") }
        guard let rel = try? String(contentsOfFile: tree + "/include/config/kernel.release", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines), !rel.isEmpty else {
            throw UsageError("\(tree) has no include/config/kernel.release (run make first)")
        }
        return (rel, image)
    }

    /// The tree has loadable modules to install: modules enabled and modules.order not empty.
    static func hasModules(_ tree: String) -> Bool {
        guard let cfg = try? String(contentsOfFile: tree + "/.config", encoding: .utf8), cfg.contains("\nCONFIG_MODULES=y") else { return false }
        let order = (try? String(contentsOfFile: tree + "/modules.order", encoding: .utf8)) ?? ""
        return !order.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    }

    /// Trees laid out by this process: the guests of one `vm` (a tree's plain and movable
    /// boots run side by side) share one layout instead of rebuilding it under each other.
    nonisolated(unsafe) private static var prepared: [String: String] = [:]
    private static let lock = NSLock()

    /// Lays the tree out under `cache`/kernels/tree-<hash> once per process (and under a file
    /// lock against another process doing it); `log` gets make's output.
    static func prepare(_ tree: String, cache: String, log: URL) throws -> String {
        let root = URL(fileURLWithPath: tree).standardizedFileURL.resolvingSymlinksInPath().path
        lock.lock()
        defer { lock.unlock() }
        if let dir = prepared[root] { return dir }
        let (release, image) = try validate(root)
        let fm = FileManager.default
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in root.utf8 { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }  // FNV-1a: stable across runs
        let dir = cache + "/kernels/tree-" + String(hash, radix: 16)
        try fm.createDirectory(atPath: cache + "/kernels", withIntermediateDirectories: true)
        let lockFD = open(dir + ".lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        if lockFD >= 0 { flock(lockFD, LOCK_EX) }
        defer { if lockFD >= 0 { close(lockFD) } }
        try? fm.removeItem(atPath: dir)
        try fm.createDirectory(atPath: dir + "/modules/lib/modules/" + release, withIntermediateDirectories: true)
        try fm.copyItem(atPath: image, toPath: dir + "/vmlinuz")
        try fm.copyItem(atPath: root + "/.config", toPath: dir + "/config")
        try release.write(toFile: dir + "/kver", atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(atPath: dir + "/build", withDestinationPath: root)
        if hasModules(root) {
            let r = try VMHarness.sh(["make", "-C", root, "-s", "modules_install", "INSTALL_MOD_PATH=" + dir + "/modules", "INSTALL_MOD_STRIP=1",
                                      "DEPMOD=/bin/true"], stderrTo: log)
            guard r.status == 0 else { throw UsageError("make modules_install failed for \(root) (\(log.path))") }
            // The initramfs builder resolves dependencies from modules.dep.
            let d = try VMHarness.sh(["depmod", "-b", dir + "/modules", release], stderrTo: log)
            guard d.status == 0 else { throw UsageError("depmod failed for \(release) (\(log.path))") }
        }
        prepared[root] = dir
        return dir
    }
}
