import Testing

@Suite("sluice itself: its version")
struct SluiceCommandTests {
    @Test func versionNamesSluiceAndTheLibrdkafkaItRunsWith() async throws {
        let process = try ChildProcess(sluiceExecutable, ["--version"])
        let output = try await process.readRest()
        #expect(await process.wait() == 0)
        #expect(output.hasPrefix("sluice 0.") && output.contains("(librdkafka 2."), "\(output)")
    }
}
