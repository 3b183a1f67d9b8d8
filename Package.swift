// swift-tools-version: 6.1
import PackageDescription

let upcoming: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "sluice",
    // Linux only (no `platforms`): the embedded broker's set-up and thread naming use Linux calls.
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .library(name: "SluiceCLI", targets: ["SluiceCLI"]),
        .library(name: "Kafka", targets: ["Kafka"]),
        .library(name: "Pipelines", targets: ["Pipelines"]),
        .library(name: "Serving", targets: ["Serving"]),
        .library(name: "Lineage", targets: ["Lineage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        .package(url: "https://github.com/swift-otel/swift-w3c-trace-context", from: "1.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // OTLP over HTTP only: the gRPC exporter would add grpc-swift to every build.
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        .systemLibrary(
            name: "CRdKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "CSystemSupport"),
        .target(
            name: "SystemSupport",
            dependencies: ["CSystemSupport", .product(name: "HeapModule", package: "swift-collections")],
            swiftSettings: upcoming
        ),
        .target(
            name: "Kafka",
            dependencies: [
                "CRdKafka",
                "SystemSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: upcoming
        ),
        .target(
            name: "Pipelines",
            dependencies: [
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: upcoming
        ),
        .target(
            name: "Serving",
            dependencies: [
                "Kafka", "Pipelines", "SystemSupport",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "W3CTraceContext", package: "swift-w3c-trace-context"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: upcoming
        ),
        .target(
            name: "Lineage",
            dependencies: [
                "Kafka", "Pipelines", "CSQLite", "SystemSupport",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: upcoming
        ),
        .target(
            name: "Examples",
            dependencies: ["Pipelines", .product(name: "CoreMetrics", package: "swift-metrics")],
            resources: [.embedInCode("Resources/digits-model.json")],
            swiftSettings: upcoming
        ),
        .target(
            name: "SluiceCLI",
            dependencies: [
                "Kafka", "Pipelines", "Serving", "Lineage", "Examples", "SystemSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: upcoming,
            // jemalloc replaces glibc's malloc in every executable that serves with Sluice: librdkafka frees on its
            // own threads what the workers allocate, and glibc's arenas make that ~20% of a tracked request's CPU
            // (docs/benchmarks.md).
            linkerSettings: [.linkedLibrary("jemalloc", .when(platforms: [.linux]))]
        ),
        .executableTarget(name: "sluice", dependencies: ["SluiceCLI"], swiftSettings: upcoming),
        .executableTarget(
            name: "lineage-benchmark",
            dependencies: ["Kafka", "Lineage", "Pipelines", .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/LineageBenchmark",
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "record-probe",
            dependencies: ["Pipelines", "Examples", "Lineage", .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/RecordProbe",
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "pipelines-benchmark", dependencies: ["Pipelines", "Examples", "Serving"],
            path: "Benchmarks/PipelinesBenchmark",
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "KafkaTests",
            dependencies: ["Kafka", .product(name: "Logging", package: "swift-log")],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "PipelinesTests",
            dependencies: [
                "Pipelines", .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "LineageTests",
            dependencies: [
                "Lineage", "Pipelines", "Kafka", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: upcoming
        ),
        .testTarget(name: "ExamplesTests", dependencies: ["Examples", "Pipelines"], swiftSettings: upcoming),
        .testTarget(
            name: "ServingTests",
            dependencies: [
                "Serving", "Kafka", "Pipelines", "SystemSupport", .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: upcoming
        ),
        .testTarget(
            name: "SluiceCLITests",
            dependencies: [
                "Kafka", "SystemSupport", "SluiceCLI", .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["python", "openlineage"],
            swiftSettings: upcoming
        ),
    ],
    swiftLanguageModes: [.v6]
)
