import ArgumentParser

struct Root: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vfio-exerciser",
        abstract: "Map each kind of memory for DMA through VFIO and check what the kernel does.",
        subcommands: [Run.self, VM.self, Probe.self, List.self, Bind.self, Unbind.self, ExecScript.self, Bench.self, Diff.self, MatrixCommand.self, Show.self])
}

// Errors become exit codes and one line on stderr in CLI.termination(for:) (CLI.swift).
CLI.main()
