import ArgumentParser
import Exerciser
import Foundation

extension RunDiff.Format: ExpressibleByArgument {}

/// A JSON report (`--format json`, or report.json of a `vm` run), or a usage error naming it.
func loadReport(_ path: String) throws -> RunReport {
    guard let data = FileManager.default.contents(atPath: path) else { throw UsageError("cannot read \(path)") }
    do { return try JSONDecoder().decode(RunReport.self, from: data) } catch {
        throw UsageError("\(path) is not a vfio-exerciser JSON report (\(error))")
    }
}

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "What changed between two JSON reports, per case, grouped by kind.",
        discussion: """
        Compares outcome, verdict, bytes unmapped, memory charged, IOMMU page size, properties (the data \
        check among them) and which checks failed; never timings or IOVAs. Exit 0: nothing changed, \
        1: something changed, 2: a report could not be read.
        """)

    @Argument(help: "The earlier report (JSON).") var before: String
    @Argument(help: "The later report (JSON).") var after: String
    @Option(help: "Output format.") var format: RunDiff.Format = .table

    func run() throws {
        let d = RunDiff(try loadReport(before), try loadReport(after))
        print(d.render(format), terminator: "")
        throw ExitCode(d.isEmpty ? 0 : 1)
    }
}

struct MatrixCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "matrix",
        abstract: "The cross-kernel table (kind × kernel and backend) from several JSON reports.",
        discussion: """
        Each report is named by its directory (out/ci/debian-6.1/report.json → debian-6.1) or by \
        NAME=PATH. --check FILE compares the table between `<!-- matrix:begin -->` and \
        `<!-- matrix:end -->` in FILE with these reports' (exit 1 on a difference; the kernel \
        versions line below the table is not compared); --update FILE rewrites that block.
        """)

    @Argument(help: "JSON reports, one per run (NAME=PATH to name a column group).") var reports: [String]
    @Option(help: "md or html.") var format: Format = .md
    @Option(help: "Write here instead of standard output.") var output: String?
    @Option(help: "Compare with the marked block of this file; exit 1 when the outcomes differ.") var check: String?
    @Option(help: "Replace the marked block of this file with the table.") var update: String?

    enum Format: String, ExpressibleByArgument, CaseIterable { case md, html }

    static let begin = "<!-- matrix:begin -->", end = "<!-- matrix:end -->"

    func validate() throws {
        if reports.isEmpty { throw ValidationError("name at least one report") }
    }

    func run() throws {
        let loaded = try reports.map { arg -> (name: String, report: RunReport) in
            if let eq = arg.firstIndex(of: "="), !arg[..<eq].contains("/") {
                return (String(arg[..<eq]), try loadReport(String(arg[arg.index(after: eq)...])))
            }
            let dir = URL(fileURLWithPath: arg).deletingLastPathComponent().lastPathComponent
            return (dir, try loadReport(arg))
        }
        let m = CrossKernelMatrix(loaded)
        let text = format == .html ? m.html() : m.markdown()
        if let file = check ?? update {
            guard let doc = try? String(contentsOfFile: file, encoding: .utf8) else { throw UsageError("cannot read \(file)") }
            guard let b = doc.range(of: Self.begin), let e = doc.range(of: Self.end), b.upperBound <= e.lowerBound else {
                throw UsageError("\(file) has no \(Self.begin) … \(Self.end) block")
            }
            if let check {
                let committed = CrossKernelMatrix.tableLines(String(doc[b.upperBound..<e.lowerBound]))
                let now = CrossKernelMatrix.tableLines(m.markdown())
                if committed == now { print("\(check): the table matches these reports"); return }
                print("\(check): the table differs from these reports (- committed, + now):")
                for l in committed where !now.contains(l) { print("- " + l) }
                for l in now where !committed.contains(l) { print("+ " + l) }
                throw ExitCode(1)
            }
            let updated = String(doc[..<b.upperBound]) + "\n" + m.markdown() + String(doc[e.lowerBound...])
            try updated.write(toFile: file, atomically: true, encoding: .utf8)
            return
        }
        if let output { try text.write(toFile: output, atomically: true, encoding: .utf8) } else { print(text, terminator: "") }
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Render a saved JSON report again, in any format (summary: the grid that fits the terminal).")

    @Argument(help: "A JSON report (`--format json`, or report.json of a `vm` run).") var report: String
    @Option(help: "Output format (default: summary on a terminal, table elsewhere).") var format: OutputFormat?
    @Option(help: "Colour.") var color: ColorMode = .auto

    func run() throws {
        let r = try loadReport(report)
        let useColor = color == .always || (color == .auto && isatty(1) != 0)
        let text = OutputFormat.render(r, format ?? .defaultFor(file: nil), color: useColor)
        print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
    }
}
