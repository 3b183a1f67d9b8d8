import Kafka
import Testing

@testable import Serving

/// The worker's shared state on its own: no broker, no tasks. Consumers and waiters are plain values here.
@Suite("The worker's state machine: slots, offsets in order, waits for progress, stalls")
struct WorkerStateMachineTests {
    private typealias Machine = WorkerStateMachine<String, Int, Int>

    /// Requests answered, as a delivery round reports them.
    private func answered(_ requests: (TopicPartition, Int64)...) -> [(partition: TopicPartition, offset: Int64)] {
        requests.map { (partition: $0.0, offset: $0.1) }
    }

    private let p0 = TopicPartition("requests", 0)
    private let p1 = TopicPartition("requests", 1)

    @Test func slotsAreGrantedUpToTheConcurrencyAndAFreedSlotWakesOneWaiter() {
        var machine = Machine(concurrency: 2)
        let granted = [machine.acquireSlot(), machine.acquireSlot(), machine.acquireSlot()]
        #expect(granted == [true, true, nil])
        let waits = [machine.waitForSlot(1), machine.waitForSlot(2)]
        #expect(waits == [true, true])
        let released = machine.releaseSlots(1, endingRequests: false)
        #expect(released.slots == [1] && machine.slotsTaken == 1)
        let (_, stillWaiting) = machine.stop()
        #expect(stillWaiting == [2])
        let afterStop = machine.acquireSlot()
        let waitsAfterStop = machine.waitForSlot(3)
        #expect(afterStop == false && !waitsAfterStop)
    }

    @Test func anOffsetIsStoredOnlyWhenEveryEarlierRequestOfItsPartitionIsDone() {
        var machine = Machine(concurrency: 8)
        for offset in Int64(5)...7 { machine.begin(p0, offset: offset) }
        machine.begin(p1, offset: 0)
        let now = ContinuousClock.now
        let first = machine.finish(answered((p0, 6), (p1, 0)), at: now)
        #expect(first == [p1: 1])
        let second = machine.finish(answered((p0, 5)), at: now)
        #expect(second == [p0: 7])
        let third = machine.finish(answered((p0, 7)), at: now)
        #expect(third == [p0: 8])
        // Finished, not yet ended: a request ends when its slot is freed.
        #expect(machine.inFlight(of: p0) == 0 && machine.requests == 4)
    }

    @Test func aWaitForProgressEndsWhenAFreedSlotMakesItsConditionTrue() {
        var machine = Machine(concurrency: 4)
        _ = machine.acquireSlot()
        machine.begin(p0, offset: 0)
        let drained: @Sendable (Machine) -> Bool = { $0.inFlight(of: TopicPartition("requests", 0)) == 0 }
        let id = machine.makeWaitID()
        let outcome = machine.waitForProgress(id: id, until: drained, 41, cancelled: false)
        #expect(outcome == nil)
        // Nothing finished yet: a freed slot wakes no one.
        let early = machine.releaseSlots(0, endingRequests: false)
        #expect(early.progressed.isEmpty)
        _ = machine.finish(answered((p0, 0)), at: .now)
        let done = machine.releaseSlots(1, endingRequests: true)
        #expect(done.progressed == [41] && machine.requests == 0)
        // A condition true from the start does not wait; a cancelled one neither.
        let atOnce = machine.waitForProgress(id: machine.makeWaitID(), until: drained, 42, cancelled: false)
        let cancelledWait = machine.waitForProgress(
            id: machine.makeWaitID(), until: { _ in false }, 43, cancelled: true)
        #expect(atOnce == true && cancelledWait == false)
        let other = machine.makeWaitID()
        _ = machine.waitForProgress(id: other, until: { _ in false }, 44, cancelled: false)
        let cancelled = machine.cancelProgressWait(id: other)
        let again = machine.cancelProgressWait(id: other)
        #expect(cancelled == 44 && again == nil)
    }

    @Test func deliveriesRetriedWithNothingAcknowledgedForTheLimitMeanStalled() {
        var machine = Machine(concurrency: 4)
        #expect(machine.status(at: .now, stallLimit: .seconds(60)) == .starting)
        let stopped = machine.consumerCreated("consumer")
        #expect(!stopped && machine.consumer == "consumer")
        let start = ContinuousClock.now
        machine.beginRetrying(at: start)
        #expect(machine.status(at: start + .seconds(59), stallLimit: .seconds(60)) == .serving)
        #expect(machine.status(at: start + .seconds(61), stallLimit: .seconds(60)) == .stalled)
        // An acknowledgement is progress.
        _ = machine.finish(answered(), at: start + .seconds(61))
        #expect(machine.status(at: start + .seconds(62), stallLimit: .seconds(60)) == .serving)
        machine.endRetrying()
        #expect(machine.status(at: start + .seconds(500), stallLimit: .seconds(60)) == .serving)
        _ = machine.stop()
        #expect(machine.status(at: start + .seconds(500), stallLimit: .seconds(60)) == .stopping)
    }

    @Test func aConsumerCreatedAfterAStopIsToldSo() {
        var machine = Machine(concurrency: 1)
        _ = machine.stop()
        let stopped = machine.consumerCreated("late")
        #expect(stopped && machine.phase == .stopping)
    }
}
