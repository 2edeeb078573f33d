import CVFIO
import SystemPackage

/// The test module's mdev (kmod/): asks the kernel to pin IOVAs with vfio_pin_pages() and to
/// copy with vfio_dma_rw() — the external path mdev vendor drivers use.
public struct ExternalPins {
    public let device: Device
    public init(device: Device) { self.device = device }

    public static let maxPages = Int(VFIO_EXERCISER_TEST_PIN_MAX)

    /// Returns the number of pages pinned.
    public func pin(iova: UInt64, pages: Int, write: Bool) -> Result<Int32, Errno> {
        var p = vfio_exerciser_test_pin(iova: iova, npages: UInt32(pages), flags: write ? VFIO_EXERCISER_TEST_PIN_WRITE : 0)
        return withUnsafeMutableBytes(of: &p) { Sys.ioctl(device.fd, CVFIO_TEST_PIN, $0.baseAddress) }
    }

    public func unpin(iova: UInt64, pages: Int) -> Result<Int32, Errno> {
        var p = vfio_exerciser_test_pin(iova: iova, npages: UInt32(pages), flags: 0)
        return withUnsafeMutableBytes(of: &p) { Sys.ioctl(device.fd, CVFIO_TEST_UNPIN, $0.baseAddress) }
    }

    public func pinned() -> Result<Int32, Errno> {
        Sys.ioctl(device.fd, CVFIO_TEST_PINNED, value: 0)
    }

    /// vfio_dma_rw between `buffer` and the memory behind `iova`.
    public func rw(iova: UInt64, buffer: UnsafeMutableRawBufferPointer, write: Bool) -> Result<Void, Errno> {
        var r = vfio_exerciser_test_rw(iova: iova, data: UInt64(UInt(bitPattern: buffer.baseAddress)),
                                       len: UInt32(buffer.count), flags: write ? VFIO_EXERCISER_TEST_RW_WRITE : 0)
        return withUnsafeMutableBytes(of: &r) { Sys.ioctl(device.fd, CVFIO_TEST_RW, $0.baseAddress) }.map { _ in () }
    }
}

/// An mediated device on the mdev bus.
public struct MdevDevice: Sendable, Equatable {
    public var uuid: String
    public var type: String
    public var group: Int

    public static let bus = "/sys/bus/mdev/devices"

    public static func all() -> [MdevDevice] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: bus) else { return [] }
        return names.sorted().compactMap { uuid in
            guard let type = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(bus)/\(uuid)/mdev_type"),
                  let group = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(bus)/\(uuid)/iommu_group"),
                  let n = Int((group as NSString).lastPathComponent) else { return nil }
            return MdevDevice(uuid: uuid, type: (type as NSString).lastPathComponent, group: n)
        }
    }
}

import Foundation
