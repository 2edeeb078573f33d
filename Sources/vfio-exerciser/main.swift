import ArgumentParser
import Exerciser
import Foundation

struct Root: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vfio-exerciser",
        abstract: "Map each kind of memory for DMA through VFIO and check what the kernel does.",
        subcommands: [Run.self, VM.self, Probe.self, List.self, Bind.self, Unbind.self, ExecScript.self, Bench.self])
}

/// Exit codes: kselftest's for verdicts (0 pass, 1 fail, 4 all skipped), 2 for any usage,
/// configuration or environment problem — always one line on stderr, never a trap.
func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("vfio-exerciser: error: \(message)\n".utf8))
    exit(2)
}

do {
    var command = try Root.parseAsRoot()
    try command.run()
} catch let e as UsageError {
    fail(e.description)
} catch let e as ConfigError {
    fail(e.description)
} catch let e as ExitCode {
    exit(e.rawValue)
} catch {
    let code = Root.exitCode(for: error)
    let message = Root.fullMessage(for: error)
    if code == .success {
        print(message)
        exit(0)
    }
    // Argument errors: the parser's first line, then the usage hint.
    let first = message.split(whereSeparator: \.isNewline).first.map(String.init) ?? message
    fail(first.replacingOccurrences(of: "Error: ", with: "") + " (see --help)")
}
