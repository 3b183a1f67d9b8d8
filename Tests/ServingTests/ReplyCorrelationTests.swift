import Testing

@testable import Serving

@Suite("A client's correlation state: waiting calls, reply partitions, dropped responses")
struct ReplyCorrelationTests {
    @Test func aResponseGoesToItsCallOnceAndLaterOnesAreCountedByWhy() {
        var state = ReplyCorrelation<Int>(sharesTopic: false, maxWaiting: 10)
        #expect(state.register("a", waiter: 1) == .waiting(partition: nil, token: 1))
        #expect(state.register("b", waiter: 2) == .waiting(partition: nil, token: 2))
        guard case .deliver(1) = state.resolve("a") else {
            Issue.record("a's response did not go to its call")
            return
        }
        guard case .duplicate = state.resolve("a") else {
            Issue.record("a second response to a was not a duplicate")
            return
        }
        state.giveUp(2)  // b's token
        state.giveUp(2)  // a second time: nothing waits for it
        guard case .late = state.resolve("b") else {
            Issue.record("b's response after its call gave up was not late")
            return
        }
        guard case .unmatched = state.resolve("c") else {
            Issue.record("a response nobody asked for was not unmatched")
            return
        }
        #expect(state.dropped == .init(duplicates: 1, late: 1, unmatched: 1))
        #expect(state.waitingCount == 0)
    }

    @Test func callsBeyondTheLimitOrWithAWaitingIDAreRefused() {
        var state = ReplyCorrelation<Int>(sharesTopic: false, maxWaiting: 2)
        #expect(state.register("a", waiter: 1) == .waiting(partition: nil, token: 1))
        #expect(state.register("a", waiter: 2) == .refused(.duplicateRequestID))
        #expect(state.register("b", waiter: 3) == .waiting(partition: nil, token: 2))
        #expect(state.register("c", waiter: 4) == .refused(.tooManyWaiting(2)))
        _ = state.resolve("a")
        #expect(state.register("c", waiter: 4) == .waiting(partition: nil, token: 3))
        // An id answered before may be used again.
        _ = state.resolve("b")
        #expect(state.register("a", waiter: 5) == .waiting(partition: nil, token: 4))
    }

    @Test func aSharedTopicsPartitionsAreNamedInTurnAndARevokeEndsTheCallsOnThem() {
        var state = ReplyCorrelation<Int>(sharesTopic: true, maxWaiting: 10)
        #expect(state.register("early", waiter: 0) == .refused(.noReplyPartition))
        state.assign([3, 1])
        state.assign([1])
        #expect(state.partitions == [1, 3])
        var named: [Int32] = []
        for index in 0..<4 {
            guard case .waiting(let partition?, _) = state.register("call-\(index)", waiter: index) else {
                Issue.record("call-\(index) named no partition")
                return
            }
            named.append(partition)
        }
        #expect(named.filter { $0 == 1 }.count == 2 && named.filter { $0 == 3 }.count == 2)
        #expect(named[0] != named[1] && named[1] != named[2])

        let stranded = state.revoke([3])
        #expect(Set(stranded.map(\.waiter)) == Set(named.indices.filter { named[$0] == 3 }))
        #expect(state.partitions == [1])
        #expect(state.waitingCount == 2)
        // Their responses, should they still come here, are late.
        guard case .late = state.resolve(stranded[0].id) else {
            Issue.record("a stranded call's response was not late")
            return
        }
        _ = state.revoke([1])
        #expect(state.register("after", waiter: 9) == .refused(.noReplyPartition))
    }

    @Test func aCallsTokenTimesItOutUnlessItEndedFirst() {
        var state = ReplyCorrelation<Int>(sharesTopic: false, maxWaiting: 10)
        guard case .waiting(_, let slow) = state.register("slow", waiter: 1),
            case .waiting(_, let quick) = state.register("quick", waiter: 2)
        else {
            Issue.record("a call could not wait")
            return
        }
        _ = state.resolve("quick")
        let expired = state.expire([quick, slow, 999])
        #expect(expired.map(\.id) == ["slow"] && expired.map(\.waiter) == [1])
        #expect(state.waitingCount == 0 && state.expire([slow]).isEmpty)
        guard case .late = state.resolve("slow") else {
            Issue.record("a response after the timeout was not late")
            return
        }
    }

    @Test func theFinishedIDsRememberedAreBounded() {
        var state = ReplyCorrelation<Int>(sharesTopic: false, maxWaiting: 10, finishedCapacity: 2)
        for id in ["a", "b", "c"] {
            _ = state.register(id, waiter: 0)
            _ = state.resolve(id)
        }
        guard case .unmatched = state.resolve("a"), case .duplicate = state.resolve("c") else {
            Issue.record("the oldest finished id was not forgotten, or the newest was")
            return
        }
    }
}
