// swift-tools-version:6.0
import Foundation
import PackageDescription

// Newer UAPI headers (scripts/fetch-uapi.sh unpacks linux-libc-dev 7.x into .uapi/) come first
// when present; without them the 6.1 system headers build everything but iommufd. Swift's
// importer needs the path too, hence unsafeFlags on every target that imports CVFIO.
// Whether iommufd is built is decided here once, for C and Swift alike: the C shim sees
// CVFIO_IOMMUFD, Swift IOMMUFD_UAPI (a system iommufd.h without .uapi/ may lack what we use).
let uapi = Context.packageDirectory + "/.uapi/usr/include"
let haveIOMMUFD = FileManager.default.fileExists(atPath: uapi + "/linux/iommufd.h")
let uapiC: [CSetting] = [.unsafeFlags(["-I", uapi])] + (haveIOMMUFD ? [.define("CVFIO_IOMMUFD")] : [])
let uapiSwift: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-I", "-Xcc", uapi] + (haveIOMMUFD ? ["-Xcc", "-DCVFIO_IOMMUFD"] : []))]
    + (haveIOMMUFD ? [.define("IOMMUFD_UAPI")] : [])

let package = Package(
    name: "vfio-exerciser",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "vfio-exerciser", targets: ["vfio-exerciser"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
    ],
    targets: [
        // Only what Swift cannot import from the UAPI headers: function-like ioctl
        // macros, a non-variadic ioctl, volatile MMIO access.
        .target(name: "CVFIO", cSettings: uapiC),
        // Typed owners of kernel objects (container, group, device) and region backings.
        .target(
            name: "VFIO",
            dependencies: [
                "CVFIO",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: uapiSwift
        ),
        // Matrix engine, expectations, verdicts, reports, VM harness.
        .target(
            name: "Exerciser",
            dependencies: [
                "VFIO",
                .product(name: "Yams", package: "Yams"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: uapiSwift
        ),
        .executableTarget(
            name: "vfio-exerciser",
            dependencies: [
                "Exerciser",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: uapiSwift,
            plugins: ["BuildInfo"]
        ),
        // The git commit `--version` names (a generated BuildInfo.swift).
        .plugin(name: "BuildInfo", capability: .buildTool()),
        // Shared by the fuzz suites of both test targets (test targets cannot import each other).
        .target(name: "FuzzSupport", dependencies: ["Exerciser"], path: "Tests/FuzzSupport", swiftSettings: uapiSwift),
        .testTarget(name: "ExerciserTests", dependencies: ["Exerciser", "VFIO", "CVFIO", "FuzzSupport"], swiftSettings: uapiSwift),
        // The command line in process (@testable executable target) and the built binary.
        .testTarget(
            name: "CLITests",
            dependencies: [
                "vfio-exerciser", "Exerciser", "FuzzSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: uapiSwift
        ),
    ]
)
