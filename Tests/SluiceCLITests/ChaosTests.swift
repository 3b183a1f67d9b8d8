import Foundation
import Testing

/// The short form of the chaos suite (`scripts/chaos.py --small`; `make chaos` runs the full one): hostile input in
/// every capture mode, kill -9 of workers under load, a frozen broker, membership churn, kill -9 of a materializer,
/// each against real processes.
@Suite("Chaos, short form", .serialized)
struct ChaosTests {
    @Test func nothingIsLostOrWrongAndHostileInputOrAFrozenBrokerServesNothingTwice() async throws {
        let script = repositoryFile("scripts/chaos.py")
        let chaos = try ChildProcess("/usr/bin/env", ["python3", script, "--small", "--sluice", sluiceExecutable])
        let lines = try await chaos.readRest().split(separator: "\n")
        let status = await chaos.wait(timeout: .seconds(900))
        #expect(status == 0, "\(lines.joined(separator: "\n"))\n\(chaos.standardError.suffix(3000))")
        var scenarios: Set<String> = []
        for line in lines {
            let result = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let scenario = try #require(result["scenario"] as? String)
            scenarios.insert(scenario)
            #expect(result["sent"] as? Int ?? 0 > 0 && result["answered"] as? Int == result["sent"] as? Int, "\(line)")
            #expect(result["missing"] as? Int == 0 && result["wrong"] as? Int == 0, "\(line)")
            if scenario == "hostile" || scenario == "freeze" { #expect(result["duplicates"] as? Int == 0, "\(line)") }
            if scenario == "materializer" {
                #expect(result["identical_to_undisturbed"] as? Bool == true, "\(line)")
                #expect(result["runs_stored"] as? Int == result["runs_answered"] as? Int, "\(line)")
            }
        }
        #expect(scenarios == ["hostile", "kill9", "freeze", "churn", "materializer"])
    }
}
