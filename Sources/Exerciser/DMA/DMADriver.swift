import CVFIO
import Foundation
import VFIO

/// One device transfer between its buffer and an IOVA.
public enum Transfer: Equatable {
    /// IOVA → device buffer (the device reads memory).
    case read(from: UInt64, count: Int)
    /// Device buffer → IOVA (the device writes memory).
    case write(to: UInt64, count: Int)
}

/// A device that can copy between its own buffer and an IOVA: what the data check needs.
/// edu is the first; a driver for Intel IOAT/DSA would fit the same seam.
public protocol DMADriver: AnyObject {
    var name: String { get }
    /// Bytes one transfer can move.
    var bufferSize: Int { get }
    /// Starts a transfer; `finish` waits for it, so transfers on different devices overlap.
    /// A driver that copies synchronously does the work here.
    func start(_ transfer: Transfer) throws
    func finish() throws
    /// The buffer itself, when the CPU can look at it (no round trip through a scratch page).
    var visibleBuffer: [UInt8]? { get }
}

extension DMADriver {
    public var visibleBuffer: [UInt8]? { nil }
    public func finish() throws {}

    public func read(from iova: UInt64, count: Int) throws {
        try start(.read(from: iova, count: count))
        try finish()
    }

    public func write(to iova: UInt64, count: Int) throws {
        try start(.write(to: iova, count: count))
        try finish()
    }
}

/// Starts every transfer, then waits for all: one round takes one transfer's time however many
/// devices take part. Each engine appears at most once. Every started transfer is waited for,
/// even when a later one fails to start.
public func dmaRound(_ ops: [(DMADriver, Transfer)]) throws {
    var started: [DMADriver] = []
    var firstError: Error?
    for (engine, t) in ops {
        do { try engine.start(t); started.append(engine) } catch { firstError = firstError ?? error; break }
    }
    for engine in started {
        do { try engine.finish() } catch { firstError = firstError ?? error }
    }
    if let firstError { throw firstError }
}

public struct DMAError: Error, CustomStringConvertible {
    public var description: String
}

/// QEMU's edu device (1234:11e8): BAR0 0x80 src, 0x88 dst, 0x90 count, 0x98 cmd; the 4 KiB
/// buffer sits at device address 0x40000 and is reachable only by DMA.
public final class EduDriver: DMADriver {
    public static let vendor = "0x1234", device = "0x11e8"
    static let src = 0x80, dst = 0x88, cnt = 0x90, cmd = 0x98
    static let bufferAddress: UInt64 = 0x40000
    static let cmdStart: UInt64 = 1, cmdToRAM: UInt64 = 2

    public let name = "edu"
    /// The buffer is 4 KiB, but QEMU's edu_check_range needs the transfer to end strictly
    /// before the buffer's end (a full 4096-byte transfer is a QEMU hw_error that kills the VM).
    public let bufferSize = 4095
    let bar0: MappedMemory
    /// A transfer takes 100 ms of virtual time; TCG can stretch that.
    let timeout: Double

    public init(bar0: MappedMemory, timeout: Double = 5) {
        self.bar0 = bar0
        self.timeout = timeout
    }

    public static func matches(_ pci: PCIDevice) -> Bool { pci.vendor == vendor && pci.device == device }

    /// The DMA engine of an edu whose BAR0 is mapped: bus mastering on, then nil unless the
    /// liveness register answers.
    static func open(device: Device, bar0: MappedMemory) throws -> EduDriver? {
        try device.enableBusMaster()
        let e = EduDriver(bar0: bar0)
        return e.selfTest() ? e : nil
    }

    /// Register 0x04 reads back the inverse of what was written: proves BAR0 is live.
    public func selfTest() -> Bool {
        cvfio_mmio_write32(bar0.base, 0x04, 0x12345678)
        return cvfio_mmio_read32(bar0.base, 0x04) == ~UInt32(0x12345678)
    }

    var deadline: Date?

    public func start(_ transfer: Transfer) throws {
        let (src, dst, count, toRAM): (UInt64, UInt64, Int, Bool)
        switch transfer {
        case .read(let iova, let n): (src, dst, count, toRAM) = (iova, Self.bufferAddress, n, false)
        case .write(let iova, let n): (src, dst, count, toRAM) = (Self.bufferAddress, iova, n, true)
        }
        guard count > 0 && count <= bufferSize else { throw DMAError(description: "edu transfer of \(count) bytes") }
        let b = bar0.base
        if deadline != nil || cvfio_mmio_read64(b, Self.cmd) & Self.cmdStart != 0 { throw DMAError(description: "edu DMA engine busy") }
        cvfio_mmio_write64(b, Self.src, src)
        cvfio_mmio_write64(b, Self.dst, dst)
        cvfio_mmio_write64(b, Self.cnt, UInt64(count))
        cvfio_mmio_write64(b, Self.cmd, Self.cmdStart | (toRAM ? Self.cmdToRAM : 0))
        deadline = Date().addingTimeInterval(timeout)
    }

    public func finish() throws {
        guard let d = deadline else { return }
        defer { deadline = nil }
        while cvfio_mmio_read64(bar0.base, Self.cmd) & Self.cmdStart != 0 {
            if Date() > d { throw DMAError(description: "edu DMA did not complete within \(timeout) s") }
            usleep(2000)
        }
    }
}

/// The data check through an mdev's external path: vfio_dma_rw() copies between the IOVA and a
/// buffer in the test module's ioctl, standing in for a device's DMA buffer.
public final class MdevRWDriver: DMADriver {
    public let name = "mdev vfio_dma_rw"
    public let bufferSize = 4095
    let pins: ExternalPins
    var buffer = [UInt8](repeating: 0, count: 4095)

    public init(pins: ExternalPins) { self.pins = pins }

    func rw(_ iova: UInt64, _ count: Int, write: Bool) throws {
        let r = buffer.withUnsafeMutableBytes { pins.rw(iova: iova, buffer: UnsafeMutableRawBufferPointer(rebasing: $0[0..<count]), write: write) }
        if case .failure(let e) = r { throw DMAError(description: "vfio_dma_rw(\(write ? "write" : "read") 0x\(String(iova, radix: 16))): \(e.symbol)") }
    }

    /// vfio_dma_rw works only in the mm that mapped the IOVA, so reads are checked here rather
    /// than through the session's scratch page (mapped by the parent, not by a case's child).
    public var visibleBuffer: [UInt8]? { buffer }

    public func start(_ transfer: Transfer) throws {
        switch transfer {
        case .read(let iova, let n): try rw(iova, n, write: false)
        case .write(let iova, let n): try rw(iova, n, write: true)
        }
    }
}
