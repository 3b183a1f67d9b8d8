import Foundation
import Kafka
import SystemSupport
import Testing

/// A process started by a test: stdout is readable line by line, stderr goes to a file; stopped by PID.
final class ChildProcess: @unchecked Sendable {
    // @unchecked Sendable: `process` is thread-safe for the calls made here; `pending` is used only by
    // `readLine`, which callers do not run concurrently.
    private let process = Process()
    private let output = Pipe()
    private var pending: [UInt8] = []
    let stderrPath: String

    /// Starts `executable`; `environment` is added to this process's own; `input`, if given, is its standard input.
    init(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil
    ) throws {
        stderrPath = NSTemporaryDirectory() + "sluice-test-\(UUID().uuidString).err"
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        if let input {
            let inputPath = stderrPath + ".in"
            _ = FileManager.default.createFile(atPath: inputPath, contents: Data(input.utf8))
            process.standardInput = FileHandle(forReadingAtPath: inputPath)
            // The open handle keeps the file readable after its name is gone.
            try? FileManager.default.removeItem(atPath: inputPath)
        }
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, added in added }
        }
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.run()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(atPath: stderrPath)
    }

    var pid: Int32 { process.processIdentifier }

    var isRunning: Bool { process.isRunning }

    /// The next line of standard output, or `nil` at its end.
    func readLine() async throws -> String? {
        try await DedicatedThread.run(name: "test-readline") { [self] in
            while true {
                if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    defer { pending.removeSubrange(...newline) }
                    return String(decoding: pending[..<newline], as: UTF8.self)
                }
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { return nil }
                pending += chunk
            }
        }
    }

    /// All of standard output from here to its end.
    func readRest() async throws -> String {
        var lines: [String] = []
        while let line = try await readLine() { lines.append(line) }
        return lines.joined(separator: "\n")
    }

    var standardError: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Waits for the process to end and returns its exit status (the signal's number if a signal ended it). A
    /// process still running after `timeout` is killed and recorded as an issue of the running test, so no check of
    /// the status can pass because of it.
    func wait(timeout: Duration = .seconds(30)) async -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            Issue.record(
                "\(process.executableURL?.lastPathComponent ?? "?") \(process.arguments ?? []) did not end within \(timeout): killed"
            )
        }
        return process.terminationStatus
    }
}

/// The `sluice` executable built alongside the tests: `SLUICE_BIN`, or the one next to the test bundle.
let sluiceExecutable: String = {
    if let path = ProcessInfo.processInfo.environment["SLUICE_BIN"] { return path }
    let bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    return bundleDirectory.appendingPathComponent("sluice").path
}()

/// A `sluice broker` process and the bootstrap servers it printed.
struct BrokerProcess {
    let process: ChildProcess
    let bootstrapServers: String

    static func start(_ arguments: [String] = []) async throws -> BrokerProcess {
        let process = try ChildProcess(sluiceExecutable, ["broker"] + arguments)
        guard let first = try await process.readLine(), !first.isEmpty else {
            throw KafkaError(code: .invalidArgument, message: "sluice broker printed nothing: \(process.standardError)")
        }
        return BrokerProcess(process: process, bootstrapServers: first)
    }

    func stop() async -> Int32 {
        process.signal(SIGTERM)
        return await process.wait()
    }
}
