import Foundation
import Testing

/// `clients/python`: the Python client's own tests, against a `sluice broker` and a `sluice worker` they start.
@Suite("The Python client")
struct PythonClientTests {
    @Test func itsTestsPassAgainstRealProcesses() async throws {
        let client = repositoryFile("clients/python")
        let tests = try ChildProcess(
            "/usr/bin/env", ["python3", "-m", "unittest", "discover", "-v", "-s", "\(client)/tests"],
            environment: ["SLUICE_BIN": sluiceExecutable, "PYTHONDONTWRITEBYTECODE": "1"])
        _ = try await tests.readRest()
        let status = await tests.wait(timeout: .seconds(300))
        let report = tests.standardError
        #expect(status == 0, "\(report.suffix(4000))")
        // unittest reports on stderr: tests ran, all passed, none was skipped.
        #expect(
            report.contains("\nOK") && !report.contains("Ran 0 tests") && !report.contains("skipped"),
            "\(report.suffix(4000))")
    }
}
