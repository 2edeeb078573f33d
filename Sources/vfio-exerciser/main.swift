import ArgumentParser
import Exerciser

struct Root: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vfio-exerciser",
        abstract: "Map each kind of memory for DMA through VFIO and check what the kernel does.",
        subcommands: [Run.self, VM.self, Probe.self, List.self, Bind.self, Unbind.self, ExecScript.self, Bench.self, Diff.self, MatrixCommand.self, Show.self,
                      LAVASignalsCommand.self])

    // A flag of its own rather than the configuration's `version:`, whose --version the parser
    // adds to every subcommand's help on the command line but not to helpMessage(for:). Hidden:
    // the help screens stay as they were (README names it).
    @Flag(help: ArgumentHelp("Show the version and git commit.", visibility: .hidden))
    var version = false

    func run() throws {
        if version { throw CleanExit.message(fullVersion) }
        throw CleanExit.helpRequest(self)
    }
}

/// "vfio-exerciser 0.1.0 (git 1a2b3c4d5e6f)": `--version` and the header of every report.
let fullVersion = "\(toolVersion) (git \(buildCommit))"

// Errors become exit codes and one line on stderr in CLI.termination(for:) (CLI.swift).
CLI.main()
