import ArgumentParser
import Exerciser

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the case kinds and the events (kind × event, --event), a line each.")

    func run() { for l in Self.lines() { print(l) } }

    static func lines() -> [String] {
        let width = max(CaseKind.allCases.map(\.rawValue.count).max() ?? 0, CaseEvent.allCases.map(\.rawValue.count).max() ?? 0)
        func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: n, withPad: " ", startingAt: 0) }
        return CaseKind.allCases.map { k in
            "\(pad(k.rawValue, width))  \(k.isEdge ? "edge  " : "region")  \(pad(k.defaultSize == 0 ? "BAR" : formatSize(k.defaultSize), 4))  \(k.summary)"
        } + CaseEvent.allCases.map { e in "\(pad(e.rawValue, width))  event   \(pad("", 4))  \(e.summary)" }
    }
}
