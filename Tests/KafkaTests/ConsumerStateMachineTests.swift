import Testing

@testable import Kafka

/// The consumer's shared state on its own: no broker, no threads. A reader is a plain number here.
@Suite("The consumer's state machine: buffer, readers, room, pauses, shutdown")
struct ConsumerStateMachineTests {
    private typealias Machine = ConsumerStateMachine<Int>

    private func record(_ partition: Int32, _ offset: Int64) -> KafkaMessage {
        KafkaMessage(topic: "t", partition: partition, offset: offset, key: nil, value: [])
    }

    private let p0 = TopicPartition("t", 0)
    private let p1 = TopicPartition("t", 1)

    @Test func waitingReadersGetRecordsInTheOrderTheyAskedAndTheRestIsBuffered() {
        var machine = Machine(capacity: 4)
        for reader in [10, 11] {
            guard case .waiting = machine.read(reader, id: machine.makeReaderID(), cancelled: false) else {
                Issue.record("a reader with nothing buffered waits")
                return
            }
        }
        let handed = [machine.arrived(record(0, 0)), machine.arrived(record(0, 1)), machine.arrived(record(0, 2))]
        #expect(handed == [10, 11, nil])
        #expect(machine.bufferedCount == 1)
        guard case .now(let message?, _) = machine.read(12, id: machine.makeReaderID(), cancelled: false) else {
            Issue.record("a buffered record is handed out at once")
            return
        }
        #expect(message.offset == 2)
    }

    @Test func aFullBufferHoldsThePollThreadUntilReadersTakeItDownToHalf() throws {
        var machine = Machine(capacity: 4)
        let waitsWhenEmpty = machine.startWaitingForRoom()
        #expect(!waitsWhenEmpty)
        for offset in 0..<4 { _ = machine.arrived(record(0, Int64(offset))) }
        #expect(machine.roomLeft == 0)
        let waitsWhenFull = machine.startWaitingForRoom()
        #expect(waitsWhenFull && machine.room == .pollThreadWaiting)
        // Down to three: not yet half.
        let thirdValue = machine.takeBuffered()
        let third = try #require(thirdValue)
        #expect(third.1 == .init())
        // Down to two (half): the poll thread's wait ends.
        let halfValue = machine.takeBuffered()
        let half = try #require(halfValue)
        #expect(half.1 == .init(pollThread: false, roomWaiter: true))
        #expect(machine.room == .free)
        machine.roomWaitEnded(timedOut: false)
        // Nothing to pause.
        let change = machine.reconcilePauses()
        #expect(change == nil)
    }

    @Test func aBufferThatStaysFullPausesEveryAssignedPartitionUntilItIsDownToHalf() throws {
        var machine = Machine(capacity: 2)
        machine.assigned([p0, p1])
        _ = machine.reconcilePauses()
        machine.setPausedByUser([p1], true)
        let userPauseValue = machine.reconcilePauses()
        let userPause = try #require(userPauseValue)
        #expect(userPause.pause == [p1])
        _ = machine.arrived(record(0, 0))
        _ = machine.arrived(record(0, 1))
        let waits = machine.startWaitingForRoom()
        #expect(waits)
        machine.roomWaitEnded(timedOut: true)
        let pausingValue = machine.reconcilePauses()
        let pausing = try #require(pausingValue)
        #expect(pausing.pause == [p0] && pausing.resume.isEmpty)
        #expect(machine.room == .paused && machine.pausedNow == [p0, p1])
        // Paused: the poll thread does not wait for room again.
        let waitsAgain = machine.startWaitingForRoom()
        #expect(!waitsAgain)
        // Down to one (half): the poll thread is woken to resume.
        let halfValue = machine.takeBuffered()
        let half = try #require(halfValue)
        #expect(half.1 == .init(pollThread: true, roomWaiter: false))
        let resumingValue = machine.reconcilePauses()
        let resuming = try #require(resumingValue)
        // The user's pause stays.
        #expect(resuming.resume == [p0] && resuming.pause.isEmpty)
        #expect(machine.room == .free && machine.pausedNow == [p1])
    }

    @Test func stoppedReadingEndsWaitingReadersAndLaterReadsGetNothing() {
        var machine = Machine(capacity: 4)
        _ = machine.read(1, id: machine.makeReaderID(), cancelled: false)
        let cancelled = machine.makeReaderID()
        _ = machine.read(2, id: cancelled, cancelled: false)
        let first = machine.cancel(reader: cancelled)
        let again = machine.cancel(reader: cancelled)
        #expect(first == 2 && again == nil)
        let ended = machine.stopReading()
        #expect(ended == [1])
        _ = machine.arrived(record(0, 0))
        guard case .now(nil, _) = machine.read(3, id: machine.makeReaderID(), cancelled: false) else {
            Issue.record("a reader after stopReading gets nil, even with a record buffered")
            return
        }
    }

    @Test func aCancelledReaderDoesNotWait() {
        var machine = Machine(capacity: 4)
        guard case .now(nil, _) = machine.read(1, id: machine.makeReaderID(), cancelled: true) else {
            Issue.record("a cancelled reader gets nil at once")
            return
        }
    }

    @Test func revokedPartitionsLoseTheirBufferedRecordsAndTheirPauses() {
        var machine = Machine(capacity: 8)
        machine.assigned([p0, p1])
        machine.setPausedByUser([p0], true)
        _ = machine.reconcilePauses()
        _ = machine.arrived(record(0, 0))
        _ = machine.arrived(record(1, 0))
        machine.revoking([p0], hookOnPool: false)
        #expect(machine.bufferedCount == 1 && machine.revocation == .none)
        let stillPaused = machine.revoked([p0])
        #expect(stillPaused == [p0])
        #expect(machine.assignment == [p1] && machine.pausedNow.isEmpty)
    }

    @Test func whileARevokeHookRunsOnThePoolItsPartitionsRecordsAreDroppedAndItCompletesOnce() {
        var machine = Machine(capacity: 8)
        machine.assigned([p0, p1])
        machine.revoking([p0], hookOnPool: true)
        #expect(machine.revocation == .hookRunning([p0]))
        // The poll thread polls on: a record of a revoking partition arrives and is dropped, even for a waiting reader.
        _ = machine.read(7, id: machine.makeReaderID(), cancelled: false)
        let toRevoking = machine.arrived(record(0, 5))
        #expect(toRevoking == nil && machine.bufferedCount == 0)
        let toKept = machine.arrived(record(1, 5))
        #expect(toKept == 7)
        // Nothing to complete until the hook has finished; then exactly once, and the poll thread is woken once.
        let early = machine.takeFinishedRevocation()
        #expect(early == nil)
        let wake = machine.revokeHookFinished()
        let wakeAgain = machine.revokeHookFinished()
        #expect(wake && !wakeAgain)
        let finished = machine.takeFinishedRevocation()
        let again = machine.takeFinishedRevocation()
        #expect(finished == [p0] && again == nil)
        _ = machine.revoked([p0])
        #expect(machine.assignment == [p1] && machine.revocation == .none)
        // Once revoked, a record of that partition is buffered again (a later assignment reads it).
        _ = machine.arrived(record(0, 6))
        #expect(machine.bufferedCount == 1)
    }

    @Test func shutdownStartsOnceAndClosingEndsEveryReader() {
        var machine = Machine(capacity: 4)
        _ = machine.read(1, id: machine.makeReaderID(), cancelled: false)
        let first = machine.beginShutdown()
        let second = machine.beginShutdown()
        #expect(first && !second)
        #expect(!machine.isPolling && !machine.isClosed)
        let ended = machine.close()
        #expect(ended == [1])
        #expect(machine.isClosed && machine.bufferedCount == 0)
        guard case .now(nil, _) = machine.read(2, id: machine.makeReaderID(), cancelled: false) else {
            Issue.record("a reader of a closed consumer gets nil")
            return
        }
    }

    @Test func aShuttingDownPollThreadDoesNotWaitForRoom() {
        var machine = Machine(capacity: 2)
        _ = machine.arrived(record(0, 0))
        _ = machine.arrived(record(0, 1))
        _ = machine.beginShutdown()
        let waits = machine.startWaitingForRoom()
        #expect(!waits)
    }
}
