import Foundation
import XCTest
@testable import Exerciser

/// The VM's NVMe image: each block names its LBA, no two blocks are alike, and a second
/// `ensure` leaves a right-sized image alone while mending a wrong-sized one.
final class NVMeImageTests: XCTestCase {
    func testEveryBlockNamesItsLBAAndBlocksDiffer() throws {
        let dir = NSTemporaryDirectory() + "nvme-image-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/img"
        let size = 512 * NVMeImage.blockSize
        try NVMeImage.ensure(at: path, size: size)
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(data.count, size)
        var seen = Set<Data>()
        for lba in 0..<512 {
            let b = data.subdata(in: lba * NVMeImage.blockSize..<(lba + 1) * NVMeImage.blockSize)
            if let f = NVMeImage.fillBlocks[UInt64(lba)] {
                XCTAssertTrue(b.allSatisfy { $0 == f }, "fill block \(lba)")
                continue
            }
            XCTAssertEqual(b.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }, UInt64(lba).littleEndian)
            XCTAssertEqual([UInt8](b), NVMeImage.block(UInt64(lba)))
            // The tail alone must differ too: a device that read the right LBA's header and
            // another's body must not pass.
            XCTAssertTrue(seen.insert(b.dropFirst(8)).inserted, "block \(lba) repeats another block's body")
        }
        // A truncated image is rewritten, a whole one kept (same inode, same mtime).
        truncate(path, off_t(size / 2))
        try NVMeImage.ensure(at: path, size: size)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), data)
        let before = try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int
        try NVMeImage.ensure(at: path, size: size)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int, before)
    }
}
