import Foundation

/// The result stream: one JSON object per line, written as each case ends, so a run that dies
/// (guest panic, SIGKILL) still leaves every finished case. The VM harness reads it on the host.
public enum StreamEvent: Codable, Equatable, Sendable {
    case header(RunHeader)
    case record(CaseRecord)
    case hygiene([Check])
    case end(exitCode: Int32)

    enum CodingKeys: String, CodingKey { case type, header, record, exit, checks }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(String.self, forKey: .type) {
        case "header": self = .header(try c.decode(RunHeader.self, forKey: .header))
        case "record": self = .record(try c.decode(CaseRecord.self, forKey: .record))
        case "hygiene": self = .hygiene(try c.decode([Check].self, forKey: .checks))
        case "end": self = .end(exitCode: try c.decode(Int32.self, forKey: .exit))
        case let t: throw DecodingError.dataCorruptedError(forKey: .type, in: c, debugDescription: "unknown event \(t)")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .header(let h): try c.encode("header", forKey: .type); try c.encode(h, forKey: .header)
        case .record(let r): try c.encode("record", forKey: .type); try c.encode(r, forKey: .record)
        case .hygiene(let h): try c.encode("hygiene", forKey: .type); try c.encode(h, forKey: .checks)
        case .end(let e): try c.encode("end", forKey: .type); try c.encode(e, forKey: .exit)
        }
    }

    public static let marker = "VFXS "

    /// One line: a marker, so lines can be picked out of a noisy serial stream, then JSON.
    public var line: String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? enc.encode(self)) ?? Data()
        return Self.marker + String(decoding: data, as: UTF8.self) + "\n"
    }

    public static func parse(_ line: Substring) -> StreamEvent? {
        guard let r = line.range(of: marker) else { return nil }
        return try? JSONDecoder().decode(StreamEvent.self, from: Data(line[r.upperBound...].utf8))
    }
}

/// What a (possibly truncated) stream held.
public struct StreamContents: Equatable {
    public var header: RunHeader?
    public var records: [CaseRecord] = []
    public var hygiene: [Check]?
    public var exitCode: Int32?

    public init(text: String) {
        for line in text.split(whereSeparator: \.isNewline) {
            switch StreamEvent.parse(line) {
            case .header(let h): header = h
            case .record(let r): records.append(r)
            case .hygiene(let h): hygiene = h
            case .end(let e): exitCode = e
            case nil: continue
            }
        }
    }
}

/// Appends whole lines to a file or a serial port (set raw), synced after each: a guest that
/// dies keeps every line written before.
public final class LineWriter {
    let fd: Int32
    public init(path: String) throws(UsageError) {
        let f = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0o644)
        guard f >= 0 else { throw UsageError("cannot open stream \(path): \(String(cString: strerror(errno)))") }
        fd = f
        if isatty(f) != 0 {
            // A serial line must pass bytes unmangled: no CR/LF translation, no echo.
            var t = termios()
            if tcgetattr(f, &t) == 0 { cfmakeraw(&t); tcsetattr(f, TCSANOW, &t) }
        }
    }

    public func write(_ line: String) {
        let bytes = Array(line.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            off += n
        }
        fsync(fd)
    }

    deinit { close(fd) }
}

public final class StreamWriter {
    let out: LineWriter
    public init(path: String) throws(UsageError) { out = try LineWriter(path: path) }
    public func emit(_ e: StreamEvent) { out.write(e.line) }
}
