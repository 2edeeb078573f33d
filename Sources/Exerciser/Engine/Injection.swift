import CVFIO
import Foundation
import VFIO

/// Test hooks that make a case misbehave on purpose, so the tests can prove a crash, a hang or a
/// wrong address is reported and contained. Syntax: "WHAT:KIND[,WHAT:KIND...]", e.g.
/// "kill:anon-private,hang:memfd,bar-fault:bar". Run-level hooks: "panic-after:N",
/// "hang-after:N", "oops-after:N" (needs the test module), "wrong-iova", "swap-prp" (NVMe: the
/// first two PRP pages of a command swapped).
enum Injection {
    enum Point { case start, mapped }

    static func hooks(_ spec: String?) -> [(String, String)] {
        (spec ?? "").split(separator: ",").compactMap { (item: Substring) -> (String, String)? in
            let parts = item.split(separator: ":", maxSplits: 1)
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }
    }

    static func apply(_ spec: String?, at point: Point, case c: PlannedCase, session: Session) {
        for (what, kind) in hooks(spec) where kind == c.kind.rawValue {
            switch (what, point) {
            case ("kill", .mapped):
                kill(getpid(), SIGKILL)
            case ("hang", .mapped):
                while true { pause() }
            case ("bar-fault", .start):
                // Memory decoding off: vfio-pci zaps the BAR mappings and a touch faults (SIGBUS).
                if let dev = session.device, let bar = session.bars.first(where: { $0.memory != nil })?.memory,
                   let cfg = try? dev.regionInfo(UInt32(VFIO_PCI_CONFIG_REGION_INDEX)),
                   let cur = try? dev.pread(cfg, offset: 4, count: 2) {
                    try? dev.pwrite(cfg, offset: 4, bytes: [cur[0] & ~0x02, cur[1]])
                    _ = cvfio_mmio_read32(bar.base, 0)
                }
            default:
                break
            }
        }
    }
}
