/// A kernel release reduced to what expectations compare: major.minor.patch.
public struct KernelVersion: Comparable, Hashable, Sendable, CustomStringConvertible, Codable {
    public var major: Int, minor: Int, patch: Int

    public init(_ major: Int, _ minor: Int, _ patch: Int = 0) {
        self.major = major
        self.minor = minor
        self.patch = patch
    }

    /// Parses `uname -r` forms: "6.1.0-40-amd64", "6.12.57+deb13-amd64", "7.3", "6.5-rc1".
    public init?(release: String) {
        var nums: [Int] = []
        var cur = ""
        for ch in release {
            if ch.isASCII && ch.isNumber { cur.append(ch); continue }
            guard !cur.isEmpty, let n = Int(cur) else { return nil }
            nums.append(n)
            cur = ""
            if ch != "." || nums.count == 3 { break }
        }
        if !cur.isEmpty, nums.count < 3, let n = Int(cur) { nums.append(n) }
        guard nums.count >= 2 else { return nil }
        self.init(nums[0], nums[1], nums.count > 2 ? nums[2] : 0)
    }

    public static func < (a: KernelVersion, b: KernelVersion) -> Bool {
        (a.major, a.minor, a.patch) < (b.major, b.minor, b.patch)
    }

    public var description: String { "\(major).\(minor).\(patch)" }
}

/// A conjunction of bounds such as ">=5.18, <6.5". Empty matches every kernel.
public struct KernelRange: Sendable, Equatable, CustomStringConvertible {
    public enum Op: String, Sendable { case ge = ">=", gt = ">", le = "<=", lt = "<", eq = "==" }
    public var bounds: [(Op, KernelVersion)]

    public static func == (a: KernelRange, b: KernelRange) -> Bool {
        a.bounds.count == b.bounds.count && zip(a.bounds, b.bounds).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    public static let any = KernelRange(bounds: [])

    public init(bounds: [(Op, KernelVersion)]) { self.bounds = bounds }

    public init(parsing text: String) throws(ConfigError) {
        var bounds: [(Op, KernelVersion)] = []
        let parts = text.split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init).filter { !$0.isEmpty }
        if parts.isEmpty { throw ConfigError("empty kernel range") }
        for p in parts {
            guard let op = [Op.ge, .le, .eq, .gt, .lt].first(where: { p.hasPrefix($0.rawValue) }) else {
                throw ConfigError("kernel range \"\(text)\": \"\(p)\" needs one of >=, >, <=, <, ==")
            }
            let v = String(p.dropFirst(op.rawValue.count))
            guard v.first?.isNumber == true, let kv = KernelVersion(release: v) else {
                throw ConfigError("kernel range \"\(text)\": \"\(v)\" is not a kernel version")
            }
            bounds.append((op, kv))
        }
        self.bounds = bounds
    }

    public func contains(_ v: KernelVersion) -> Bool {
        bounds.allSatisfy { op, b in
            switch op {
            case .ge: return v >= b
            case .gt: return v > b
            case .le: return v <= b
            case .lt: return v < b
            case .eq: return v == b
            }
        }
    }

    public var description: String {
        bounds.isEmpty ? "any" : bounds.map { "\($0.0.rawValue)\($0.1)" }.joined(separator: ",")
    }
}
