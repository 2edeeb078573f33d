import Foundation
import XCTest

/// What a host test needs from the machine. A test whose precondition is missing checks the
/// "unavailable" branch instead — unless VFIO_EXERCISER_REQUIRE names it (CI: "this machine has
/// it"), when the missing precondition is a failure. "all" names every one.
enum HostPrecondition: String, CaseIterable {
    case hugetlb2M = "hugetlb-2M"
    case hugetlb1G = "hugetlb-1G"
    case thp
    case memfdSecret = "memfd-secret"
    case fsFile = "fs-file"
    case mlock
    /// /proc/self/pagemap shows PFNs (root): the movable-zone checks read them.
    case pagemap

    static let variable = "VFIO_EXERCISER_REQUIRE"

    /// The names in VFIO_EXERCISER_REQUIRE, or why they are not all known.
    static func required(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Result<Set<HostPrecondition>, ConfigErrorText> {
        let names = (env[variable] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if names == ["all"] { return .success(Set(allCases)) }
        var out = Set<HostPrecondition>()
        for n in names {
            guard let p = HostPrecondition(rawValue: n) else {
                return .failure(ConfigErrorText("\(variable): unknown precondition \"\(n)\" (known: all, \(allCases.map(\.rawValue).joined(separator: ", ")))"))
            }
            out.insert(p)
        }
        return .success(out)
    }

    /// Call where a test takes its "unavailable" branch: a failure when the machine must have `self`.
    func missing(_ why: String, env: [String: String] = ProcessInfo.processInfo.environment,
                 file: StaticString = #filePath, line: UInt = #line) {
        switch Self.required(env) {
        case .failure(let e): XCTFail(e.text, file: file, line: line)
        case .success(let req) where req.contains(self):
            XCTFail("\(rawValue) is missing on a machine that must have it (\(Self.variable)): \(why)", file: file, line: line)
        case .success: break
        }
    }
}

struct ConfigErrorText: Error { var text: String; init(_ t: String) { text = t } }

final class PreconditionTests: XCTestCase {
    /// A misspelt name would otherwise only show once its test took the unavailable branch.
    func testTheEnvironmentNamesKnownPreconditions() {
        if case .failure(let e) = HostPrecondition.required() { XCTFail(e.text) }
    }

    func testParsing() throws {
        let v = HostPrecondition.variable
        XCTAssertEqual(try HostPrecondition.required([:]).get(), [])
        XCTAssertEqual(try HostPrecondition.required([v: "hugetlb-2M, thp,"]).get(), [.hugetlb2M, .thp])
        XCTAssertEqual(try HostPrecondition.required([v: "all"]).get(), Set(HostPrecondition.allCases))
        guard case .failure(let e) = HostPrecondition.required([v: "thp,hugetlb-2m"]) else { return XCTFail("a misspelt name was accepted") }
        XCTAssertTrue(e.text.contains("unknown precondition \"hugetlb-2m\""), e.text)
    }
}
