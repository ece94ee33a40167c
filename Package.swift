// swift-tools-version:6.0
import PackageDescription

// Swift 5 language mode: the runtime passes tensors between threads by hand (DispatchQueue.concurrentPerform),
// which strict Sendable checking would force us to annotate everywhere without making anything safer.
// Release builds are -O, not -Ounchecked: under -Ounchecked a failed `precondition` is not checked and a
// `preconditionFailure` is undefined behaviour, so bad input (a wrong shape, a bad file) ran on or crashed without
// its message, and a CUDA error reported that way (an over-large launch) segfaulted (BENCHMARKS.md, sixteenth session).
let swift5: [SwiftSetting] = [.swiftLanguageMode(.v5)]

let package = Package(
    name: "Kinema",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "kinema", targets: ["Kinema"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-numerics", from: "1.0.0"),
    ],
    targets: [
        // The few CBLAS prototypes we call, declared by hand so no header search path is needed; links OpenBLAS.
        .target(name: "CBLAS", linkerSettings: [.linkedLibrary("openblas")]),
        .target(name: "KinemaTensor", dependencies: [.product(name: "Numerics", package: "swift-numerics")],
                swiftSettings: swift5),
        .target(name: "KinemaCPU", dependencies: ["KinemaTensor", "CBLAS",
                                                  .product(name: "Numerics", package: "swift-numerics")],
                swiftSettings: swift5),
        // The GPU backend: driver API, NVRTC (and later cuBLASLt, NCCL) through dlopen, kernels as .cu resources.
        .target(name: "KinemaCUDA", dependencies: ["KinemaTensor"], resources: [.copy("Kernels")],
                swiftSettings: swift5),
        .target(name: "KinemaNN", dependencies: ["KinemaTensor"], swiftSettings: swift5),
        .target(name: "KinemaDiffusion", dependencies: ["KinemaTensor"], swiftSettings: swift5),
        .target(name: "KinemaModels", dependencies: ["KinemaTensor", "KinemaNN"], swiftSettings: swift5),
        .target(name: "KinemaData", dependencies: ["KinemaTensor"], swiftSettings: swift5),
        .target(name: "KinemaTrain", dependencies: ["KinemaTensor", "KinemaNN", "KinemaDiffusion", "KinemaModels",
                                                    "KinemaData"], swiftSettings: swift5),
        .executableTarget(name: "Kinema", dependencies: [
            "KinemaTensor", "KinemaCPU", "KinemaCUDA", "KinemaNN", "KinemaDiffusion", "KinemaModels", "KinemaData",
            "KinemaTrain", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: swift5),

        // Checks every CUDA op against the CPU backend on the GPU machine (scripts/gpu-check runs it there).
        .executableTarget(name: "kinema-gpu-check", dependencies: ["KinemaTensor", "KinemaCPU", "KinemaCUDA", "KinemaNN",
                                                                   "KinemaModels", "KinemaDiffusion"],
                          path: "Sources/KinemaGPUCheck", swiftSettings: swift5),
        .target(name: "KinemaTestSupport", dependencies: ["KinemaTensor", "KinemaCPU"], path: "Tests/KinemaTestSupport",
                swiftSettings: swift5),
        .testTarget(name: "KinemaTensorTests", dependencies: ["KinemaTensor", "KinemaCPU", "KinemaTestSupport"],
                    swiftSettings: swift5),
        .testTarget(name: "KinemaCPUTests", dependencies: ["KinemaTensor", "KinemaCPU", "KinemaTestSupport"],
                    swiftSettings: swift5),
        .testTarget(name: "KinemaCUDATests", dependencies: ["KinemaCUDA"], swiftSettings: swift5),
        .testTarget(name: "KinemaNNTests", dependencies: ["KinemaNN", "KinemaCPU", "KinemaTestSupport"],
                    swiftSettings: swift5),
        .testTarget(name: "KinemaDiffusionTests", dependencies: ["KinemaDiffusion", "KinemaCPU", "KinemaTestSupport"],
                    swiftSettings: swift5),
        .testTarget(name: "KinemaModelsTests", dependencies: ["KinemaModels", "KinemaCPU", "KinemaTestSupport"],
                    swiftSettings: swift5),
        .testTarget(name: "KinemaDataTests", dependencies: ["KinemaData", "KinemaTestSupport"], swiftSettings: swift5),
        .testTarget(name: "KinemaTrainTests", dependencies: ["KinemaTrain", "KinemaCPU", "KinemaTestSupport"],
                    swiftSettings: swift5),
    ]
)
