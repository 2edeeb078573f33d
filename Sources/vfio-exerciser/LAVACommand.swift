import ArgumentParser
import Exerciser
import Foundation

/// Hidden: a KTAP file's results as LAVA test-case signals (the LAVA test definition's last step).
/// Exit 1 when any case failed.
struct LAVASignalsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lava-signals", abstract: "Print a KTAP file's results as LAVA test-case signals.", shouldDisplay: false)

    @Argument(help: "KTAP file.")
    var file: String

    func run() throws {
        guard let data = FileManager.default.contents(atPath: file) else { throw UsageError("cannot read \(file)") }
        let cases = LAVASignals.cases(fromKTAP: String(decoding: data, as: UTF8.self))
        print(LAVASignals.render(cases), terminator: "")
        throw ExitCode(cases.contains { $0.result == "fail" } ? 1 : 0)
    }
}
