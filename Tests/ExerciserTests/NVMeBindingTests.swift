import Foundation
import XCTest
@testable import Exerciser

/// `bind` refuses an NVMe controller whose namespace is in use: checked on a fake sysfs, for
/// plain and multipath namespaces, partitions, device-mapper holders and swap.
final class NVMeBindingTests: XCTestCase {
    var root = ""

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "nvme-binding-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        addTeardownBlock { [root] in try? FileManager.default.removeItem(atPath: root) }
    }

    func file(_ path: String, _ text: String) throws {
        let p = root + "/" + path
        try FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: p, atomically: true, encoding: .utf8)
    }

    func dir(_ path: String) throws { try FileManager.default.createDirectory(atPath: root + "/" + path, withIntermediateDirectories: true) }

    /// Controller nvme0 with namespace nvme0n1 (259:0) and partition p2 (259:2).
    func plain() throws {
        try dir("pci/nvme/nvme0/nvme0n1")
        try file("block/nvme0n1/dev", "259:0\n")
        try file("block/nvme0n1/nvme0n1p2/dev", "259:2\n")
    }

    func check(mountinfo: String, swaps: String = "Filename Type Size Used Priority\n") -> String? {
        Binding.blockInUse(deviceDir: root + "/pci", sysBlock: root + "/block", mountinfo: mountinfo, swaps: swaps)
    }

    let rootMount = "22 1 259:2 / / rw,relatime - ext4 /dev/root rw\n"

    func testMountedPartitionOfPlainNamespace() throws {
        try plain()
        XCTAssertEqual(check(mountinfo: rootMount), "block device nvme0n1p2 is mounted on /")
        XCTAssertNil(check(mountinfo: "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"), "another disk's mount")
    }

    func testMultipathHeadFoundFromTheHiddenPath() throws {
        try dir("pci/nvme/nvme1/nvme0c1n1")
        try file("block/nvme0n1/dev", "259:0\n")
        try file("block/nvme0n1/nvme0n1p2/dev", "259:2\n")
        XCTAssertEqual(check(mountinfo: rootMount), "block device nvme0n1p2 is mounted on /")
    }

    func testDeviceMapperHolderOfAPartition() throws {
        try plain()
        try dir("block/nvme0n1/nvme0n1p2/holders/dm-0")
        try file("block/dm-0/dev", "254:0\n")
        XCTAssertEqual(check(mountinfo: "30 1 254:0 / /home rw - ext4 /dev/mapper/vg-home rw\n"), "block device dm-0 is mounted on /home")
    }

    func testSwapOnTheNamespace() throws {
        try plain()
        XCTAssertEqual(check(mountinfo: "", swaps: "Filename Type Size Used Priority\n/dev/nvme0n1p2 partition 1 0 -2\n"),
                       "block device nvme0n1p2 is in use as swap")
    }

    func testScsiDiskStillCounts() throws {
        try dir("pci/host0/target0:0:0/0:0:0:0/block/sda")
        try file("block/sda/dev", "8:0\n")
        XCTAssertEqual(check(mountinfo: "22 1 8:0 / /mnt rw - ext4 /dev/sda rw\n"), "block device sda is mounted on /mnt")
    }
}
