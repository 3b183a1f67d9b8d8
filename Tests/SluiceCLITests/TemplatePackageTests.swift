import Foundation
import Testing

/// `deploy/template`, a user's own package that depends on Sluice: its README's commands, run as written.
@Suite("The template of a user's package")
struct TemplatePackageTests {
    static let template = repositoryFile("deploy/template")

    /// The first block of `language` after the heading `heading` in the Markdown file at `path`.
    static func block(_ language: String, after heading: String, in path: String) throws -> String {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let section = try #require(text.range(of: heading))
        let start = try #require(text.range(of: "```\(language)\n", range: section.upperBound..<text.endIndex))
        let end = try #require(text.range(of: "\n```", range: start.upperBound..<text.endIndex))
        return String(text[start.upperBound..<end.lowerBound])
    }

    @Test func itsReadmeBuildsItAndServesRequestsEndToEnd() async throws {
        let written = try Self.block("sh", after: "## Try it", in: "\(Self.template)/README.md")
        // The block builds the package and leaves no process behind: it stops what it started on exit. It builds in
        // the tests' own build directory, where Sluice is built already, with the same compiler flags (`make test`
        // passes them in SLUICE_SWIFT_BUILD_FLAGS): only the package's own code is compiled, not Sluice again. The
        // running `swift test` holds that directory's lock while it only runs tests: `--ignore-lock` lets the build in.
        let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let scratch = binaries.deletingLastPathComponent().deletingLastPathComponent().path
        let flags = ProcessInfo.processInfo.environment["SLUICE_SWIFT_BUILD_FLAGS"] ?? ""
        let build = "swift build\n"
        let binary = "bin=.build/debug/fraud-check\n"
        try #require(written.hasPrefix(build + binary), "the README's block no longer starts as this test expects")
        let block =
            "swift build --scratch-path '\(scratch)' --ignore-lock \(flags)\nbin='\(binaries.path)/fraud-check'\n"
            + written.dropFirst(build.count + binary.count)
        let shell = try ChildProcess(
            "/bin/bash", ["-euo", "pipefail", "-c", "cd '\(Self.template)'\n\(block)"])
        let output = try await shell.readRest()
        let status = await shell.wait(timeout: .seconds(1500))
        #expect(status == 0, "stderr: \(shell.standardError.suffix(3000))")
        let responses = output.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        try #require(responses.count == 3, "output: \(output)")
        let decisions = responses.map { ($0["output"] as? [String: Any])?["decision"] as? String }
        #expect(decisions == ["review", "approve", nil])
        #expect(responses.map { $0["status"] as? String } == ["ok", "ok", "error"])
        #expect((responses[2]["error"] as? [String: Any])?["code"] as? String == "invalid_input")
        #expect(responses.allSatisfy { $0["capture"] as? String == "BATCH" && $0["run_id"] is String })

        // docs/getting-started.md, step 3: its Python block calls the package's worker with the Python client.
        let python = try Self.block(
            "python", after: "## 3. Call it from Python", in: "\(Self.template)/../../docs/getting-started.md")
        let broker = try await BrokerProcess.start([
            "--topic", "fraud-check.requests:2", "--topic", "fraud-check.responses:2", "--topic", "fraud-check.dlq:1",
            "--topic", "sluice.lineage:2",
        ])
        let worker = try ChildProcess(
            "\(binaries.path)/fraud-check",
            ["worker", "--brokers", broker.bootstrapServers, "--pipeline", "fraud-check"])
        let client = try ChildProcess(
            "/usr/bin/env", ["python3", "-c", python],
            environment: [
                "SLUICE_BROKERS": broker.bootstrapServers, "PYTHONPATH": "\(Self.template)/../../clients/python",
                "PYTHONDONTWRITEBYTECODE": "1",
            ])
        let printed = try await client.readRest()
        #expect(await client.wait(timeout: .seconds(120)) == 0, "stderr: \(client.standardError.suffix(3000))")
        #expect(printed == "verdict review 0.777\nrefused invalid_input validate")
        worker.signal(SIGTERM)
        #expect(await worker.wait() == 0)
        #expect(await broker.stop() == 0)
    }
}
