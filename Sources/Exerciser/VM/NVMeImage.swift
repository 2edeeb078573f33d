import Foundation

/// The test VM's NVMe namespace: a raw image whose every 4 KiB block names itself, so a page
/// that arrives at the wrong place, or a command that read the wrong LBA, cannot pass for right.
/// Block b: bytes 0..<8 hold b (little-endian), the rest a pattern seeded by b. QEMU serves it
/// read-only; the exerciser never writes a namespace anyway.
public enum NVMeImage {
    public static let blockSize = 4096
    /// Bigger than the largest region the matrix checks whole without wrapping (hugetlb-2M,
    /// 2 MiB) many times over; a larger region wraps the LBA range and says so.
    public static let defaultSize = 64 << 20

    /// Blocks of one byte each, inside the 2 MiB the NVMe check reads as its reference: memory
    /// the CPU cannot write but whose content is known (the zero page behind untouched anon,
    /// readonly-read's 0x3C) is compared against one of these.
    public static let fillBlocks: [UInt64: UInt8] = [510: 0x00, 511: 0x3C]

    /// The bytes of block `lba`.
    public static func block(_ lba: UInt64) -> [UInt8] {
        if let f = fillBlocks[lba] { return [UInt8](repeating: f, count: blockSize) }
        var out = [UInt8](repeating: 0, count: blockSize)
        withUnsafeBytes(of: lba.littleEndian) { for i in 0..<8 { out[i] = $0[i] } }
        // xorshift64*: cheap, and no two blocks share a run longer than a few bytes.
        var x = lba &* 0x9E37_79B9_7F4A_7C15 | 1
        var i = 8
        while i < blockSize {
            x ^= x >> 12; x ^= x << 25; x ^= x >> 27
            let v = (x &* 0x2545_F491_4F6C_DD1D).littleEndian
            withUnsafeBytes(of: v) { for j in 0..<8 { out[i + j] = $0[j] } }
            i += 8
        }
        return out
    }

    /// Writes the image at `path` unless a file of the right size is there already (the content
    /// is a pure function of the size; the name says the layout's version). Written beside and renamed, so a parallel run never sees
    /// half an image.
    public static func ensure(at path: String, size: Int = defaultSize) throws {
        if let a = try? FileManager.default.attributesOfItem(atPath: path), (a[.size] as? NSNumber)?.intValue == size { return }
        let tmp = path + ".\(getpid()).tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: nil), let h = FileHandle(forWritingAtPath: tmp) else {
            throw UsageError("cannot write the NVMe image \(tmp)")
        }
        defer { try? h.close() }
        var chunk = Data(capacity: 1 << 20)
        for lba in 0..<UInt64(size / blockSize) {
            chunk.append(contentsOf: block(lba))
            if chunk.count >= 1 << 20 { try h.write(contentsOf: chunk); chunk.removeAll(keepingCapacity: true) }
        }
        try h.write(contentsOf: chunk)
        try h.close()
        guard rename(tmp, path) == 0 else { throw UsageError("cannot rename \(tmp) to \(path): \(String(cString: strerror(errno)))") }
    }
}
