import Foundation

/// `git bisect run` exit codes for a test run: 0 good (every case passed), 1 bad (a case failed:
/// a kernel verdict), 125 untestable (the kernel could not be tested — no build, no boot, no
/// result, a harness or infrastructure problem — never a verdict on the kernel).
public enum Bisect {
    public static let good: Int32 = 0, bad: Int32 = 1, skip: Int32 = 125

    /// One kernel's run: its report, or the error that stopped it before there was one.
    public static func exitCode(report: RunReport?, error: Error?) -> Int32 {
        if error != nil { return skip }
        guard let r = report, !r.results.isEmpty else { return skip }
        // Nothing ran: the kernel was not tested, whatever the reason.
        if r.results.allSatisfy({ $0.verdict.kind == .skip }) { return skip }
        if r.results.contains(where: { $0.verdict.kind == .fail }) { return bad }
        // A panic or a hang after cases ran is the kernel's doing; a guest that never started
        // the run is not (that comes as an error, above).
        return r.incidents.isEmpty ? good : bad
    }
}
