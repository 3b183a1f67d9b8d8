import Foundation
import Testing

/// `deploy/template`, a user's own package that depends on Sluice: its README's commands, run as written.
@Suite("The template of a user's package")
struct TemplatePackageTests {
    static let template = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../deploy/template").standardized.path

    /// The first `sh` block after the heading `## Try it`.
    static func tryItBlock() throws -> String {
        let readme = try String(contentsOfFile: "\(template)/README.md", encoding: .utf8)
        let section = try #require(readme.range(of: "## Try it"))
        let start = try #require(readme.range(of: "```sh\n", range: section.upperBound..<readme.endIndex))
        let end = try #require(readme.range(of: "\n```", range: start.upperBound..<readme.endIndex))
        return String(readme[start.upperBound..<end.lowerBound])
    }

    @Test func itsReadmeBuildsItAndServesRequestsEndToEnd() async throws {
        let block = try Self.tryItBlock()
        // The block builds the package (the first time, all of Sluice with it) and leaves no process behind: it
        // stops what it started on exit.
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
    }
}
