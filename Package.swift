// swift-tools-version:6.0
import PackageDescription

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
        .target(name: "CVFIO"),
        // Typed owners of kernel objects (container, group, device) and region backings.
        .target(
            name: "VFIO",
            dependencies: [
                "CVFIO",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // Matrix engine, expectations, verdicts, reports, VM harness.
        .target(
            name: "Exerciser",
            dependencies: [
                "VFIO",
                .product(name: "Yams", package: "Yams"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .executableTarget(
            name: "vfio-exerciser",
            dependencies: [
                "Exerciser",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "ExerciserTests", dependencies: ["Exerciser", "VFIO", "CVFIO"]),
    ]
)
