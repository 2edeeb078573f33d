import ArgumentParser

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pinning throughput and latency per region kind (not yet implemented).")
    func run() throws { throw ValidationError("bench is not implemented yet") }
}
