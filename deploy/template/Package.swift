// swift-tools-version: 6.1
// A team's own pipelines served by Sluice: one executable with the whole `sluice` command line for them.
import PackageDescription

let package = Package(
    name: "fraud-check",
    platforms: [.macOS(.v15)],
    products: [.executable(name: "fraud-check", targets: ["FraudCheck"])],
    dependencies: [
        // In your own package, depend on Sluice by URL and version instead:
        // .package(url: "https://github.com/<your-org>/sluice", from: "0.1.0"),
        .package(name: "sluice", path: "../..")
    ],
    targets: [
        .executableTarget(
            name: "FraudCheck",
            dependencies: [
                .product(name: "SluiceCLI", package: "sluice"),
                .product(name: "Pipelines", package: "sluice"),
            ],
            path: "Sources/FraudCheck"
        )
    ],
    swiftLanguageModes: [.v6]
)
