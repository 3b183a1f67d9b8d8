import Synchronization
import SystemSupport
import Testing

@Suite("Deadlines on a thread of their own")
struct DeadlineSchedulerTests {
    /// A later deadline filed first does not hold back an earlier one filed after it; none expires before its time.
    @Test func tokensExpireInDeadlineOrderAndNeverEarly() async throws {
        let (expired, sink) = AsyncStream.makeStream(of: (UInt64, ContinuousClock.Instant).self)
        let scheduler = try DeadlineScheduler(name: "test-deadlines") { tokens in
            for token in tokens { sink.yield((token, .now)) }
        }
        let start = ContinuousClock.now
        let delays: [UInt64: Duration] = [1: .milliseconds(300), 2: .milliseconds(100), 3: .milliseconds(200)]
        for token in [UInt64(1), 2, 3] { scheduler.schedule(token, after: delays[token]!) }
        var order: [UInt64] = []
        for await (token, at) in expired {
            order.append(token)
            #expect(at - start >= delays[token]!)
            if order.count == 3 { break }
        }
        #expect(order == [2, 3, 1])
        scheduler.stop()
    }

    @Test func aStoppedSchedulerExpiresNothingMore() async throws {
        let count = Mutex(0)
        let scheduler = try DeadlineScheduler(name: "test-deadlines") { tokens in count.withLock { $0 += tokens.count }
        }
        scheduler.schedule(1, after: .milliseconds(1))
        scheduler.schedule(2, after: .seconds(3600))
        try await Task.sleep(for: .milliseconds(200))
        scheduler.stop()
        scheduler.stop()
        #expect(count.withLock { $0 } == 1)
    }
}
