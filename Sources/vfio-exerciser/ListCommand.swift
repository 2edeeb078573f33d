import ArgumentParser
import Exerciser

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the case kinds, a line each.")

    func run() {
        let width = CaseKind.allCases.map(\.rawValue.count).max() ?? 0
        for k in CaseKind.allCases {
            let name = k.rawValue.padding(toLength: width, withPad: " ", startingAt: 0)
            let size = k.defaultSize == 0 ? "BAR" : formatSize(k.defaultSize)
            print("\(name)  \(k.isEdge ? "edge  " : "region")  \(size.padding(toLength: 4, withPad: " ", startingAt: 0))  \(k.summary)")
        }
    }
}
