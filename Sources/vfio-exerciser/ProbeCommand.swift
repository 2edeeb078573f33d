import ArgumentParser
import Exerciser
import Foundation
import VFIO

struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show what this machine offers for VFIO testing.")

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func run() throws {
        let facts = MachineProbe.collect()
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(facts), as: UTF8.self))
        } else {
            print(facts.text)
        }
    }
}
