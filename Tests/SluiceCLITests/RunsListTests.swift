import Testing

@testable import SluiceCLI

@Suite("sluice runs list: --since, the progress line")
struct RunsListTests {
    private let now: Int64 = 1_795_600_800_000_000

    @Test(
        arguments: [
            ("90s", 1_795_600_710_000_000), ("15m", 1_795_599_900_000_000), ("2h", 1_795_593_600_000_000),
            ("7d", 1_794_996_000_000_000), ("0s", 1_795_600_800_000_000),
            ("2026-11-25", 1_795_564_800_000_000), ("2026-11-25T10:00:00Z", 1_795_600_800_000_000),
            ("2026-11-25T10:00:00.250Z", 1_795_600_800_250_000), ("2026-11-25T12:00:00+02:00", 1_795_600_800_000_000),
        ] as [(String, Int64)])
    func sinceIsATimeOrAnAge(text: String, micros: Int64) throws {
        #expect(try #require(Since(argument: text)).micros(now: now) == micros)
    }

    @Test(arguments: [
        "", "yesterday", "-5m", "5x", "1.5h", "m", "2026-13-01", "2026-11-25 10:00", "99999999999999999d",
    ])
    func anythingElseIsRefused(text: String) {
        #expect(Since(argument: text) == nil)
    }

    @Test func theProgressLineWaitsASecondThenShowsFourTimesASecond() {
        var line = ProgressLine(started: 0)
        let shown = [500_000, 1_100_000, 1_200_000, 1_350_000].map { line.shouldShow(at: $0) }
        #expect(shown == [false, true, false, true])
        #expect(line.isShown)
    }
}
