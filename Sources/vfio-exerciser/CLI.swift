import ArgumentParser
import Exerciser
import Foundation

/// How the process ends once parsing or a command has thrown: the exit status and what goes to
/// standard output and standard error (empty, or text ending in a newline).
struct Termination: Equatable {
    var code: Int32
    var stdout = ""
    var stderr = ""
}

/// Exit codes: kselftest's for verdicts (0 pass, 1 fail, 4 all skipped), 2 for any usage,
/// configuration or environment problem — always one line on stderr, never a trap.
enum CLI {
    static let errorPrefix = "vfio-exerciser: error: "

    static func termination(for error: Error) -> Termination {
        switch error {
        case let e as UsageError: return failure(e.description)
        case let e as ConfigError: return failure(e.description)
        case let e as ExitCode: return Termination(code: e.rawValue)
        default: break
        }
        let code = Root.exitCode(for: error)
        if code == .success {
            // --help, `help <command>`, no subcommand: the help screen on stdout.
            let text = Root.fullMessage(for: error)
            return Termination(code: 0, stdout: text.isEmpty || text.hasSuffix("\n") ? text : text + "\n")
        }
        // Argument errors: the parser's message without its usage screen, on one line.
        // "Please provide one of the following:\n  - a\n  - b" becomes "…: a, b"; any other line
        // break (one in a value the user gave) is escaped by failure().
        var message = Root.message(for: error).trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: #":\n *- "#, with: ": ", options: .regularExpression)
            .replacingOccurrences(of: #"\n *- "#, with: ", ", options: .regularExpression)
        if message.isEmpty { message = String(describing: type(of: error)) }
        return failure(code == .validationFailure ? message + " (see --help)" : message)
    }

    /// Exit 2 with `message` as the one line on stderr (line breaks and control characters escaped).
    static func failure(_ message: String) -> Termination {
        let m = oneLine(message)
        return Termination(code: 2, stderr: errorPrefix + (m.isEmpty ? "unknown error" : m) + "\n")
    }

    static func main(_ arguments: [String]? = nil) -> Never {
        let t: Termination
        do {
            var command = try Root.parseAsRoot(arguments)
            try command.run()
            exit(0)
        } catch {
            t = termination(for: error)
        }
        if !t.stdout.isEmpty { print(t.stdout, terminator: "") }
        if !t.stderr.isEmpty { FileHandle.standardError.write(Data(t.stderr.utf8)) }
        exit(t.code)
    }
}
