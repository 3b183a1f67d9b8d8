import Kafka
import Synchronization
import Testing

@Suite("Consumer groups: assignment, rebalance, offsets, backpressure")
struct ConsumerGroupTests {
    /// What a revoke hook saw when it ran.
    struct Revocation: Sendable {
        var partitions: [TopicPartition]
        var lost: Bool
        var assignmentDuringHook: Set<TopicPartition>
        var storeSucceeded: Bool
    }

    private func produce(_ values: Range<Int>, to topic: String, _ test: TestCluster) async throws {
        let producer = try KafkaProducer(configuration: test.producerConfiguration(), logger: testLogger)
        for index in values {
            try await producer.send(OutgoingMessage(topic: topic, key: "\(index)".bytes, value: "\(index)".bytes)) {
                _ in
            }
        }
        try await producer.flush(timeout: .seconds(20))
        await producer.close()
    }

    /// The offset to commit for each partition once `records` are done: one past the highest offset read.
    private func nextOffsets(after records: [KafkaMessage]) -> [TopicPartition: Int64] {
        records.reduce(into: [:]) { next, record in
            next[record.topicPartition] = max(next[record.topicPartition] ?? 0, record.offset + 1)
        }
    }

    @Test func twoMembersSplitThePartitionsAndRevokeRunsBeforeHandOff() async throws {
        let test = try TestCluster()
        let topic = try test.topic("group", partitions: 4)
        try await produce(0..<40, to: topic, test)

        let revocations = Collector<Revocation>()
        // Commits the embedded coordinator refused while the second member joined (docs/operations.md): the records
        // they covered are read again by their next owner, as at-least-once allows.
        let refusedCommits = Collector<KafkaError>()
        let progress = Mutex<[TopicPartition: Int64]>([:])
        let firstBox = Mutex<KafkaConsumer?>(nil)
        let first = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "split"), topics: [topic],
            rebalanceHandler: RebalanceHandler(partitionsRevoked: { partitions, lost in
                // The partitions are still this member's while the hook runs: it stores its progress for them.
                let consumer = firstBox.withLock { $0 }
                let finished = progress.withLock { $0 }.filter { partitions.contains($0.key) }
                var stored = true
                do { try consumer?.storeOffsets(finished) } catch { stored = false }
                revocations.append(
                    Revocation(
                        partitions: partitions, lost: lost, assignmentDuringHook: consumer?.assignment ?? [],
                        storeSucceeded: stored))
            }),
            logger: testLogger,
            onError: { error in if error.code == .rebalanceInProgress { refusedCommits.append(error) } })
        firstBox.withLock { $0 = first }
        #expect(await eventually { first.assignment.count == 4 })

        let early = await read(40, from: first)
        #expect(early.count == 40)
        progress.withLock { $0 = nextOffsets(after: early) }

        let second = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "split"), topics: [topic], logger: testLogger)
        #expect(
            await eventually {
                let a = first.assignment
                let b = second.assignment
                return a.count == 2 && b.count == 2 && a.isDisjoint(with: b)
            })
        let all = Set((0..<4).map { TopicPartition(topic, Int32($0)) })
        #expect(first.assignment.union(second.assignment) == all)

        let revocation = try #require(revocations.all.first)
        #expect(!revocation.lost)
        #expect(!revocation.partitions.isEmpty)
        #expect(Set(revocation.partitions).isSubset(of: revocation.assignmentDuringHook))
        #expect(revocation.storeSucceeded)

        // New records reach the two members; nothing read before the rebalance is read again.
        try await produce(40..<80, to: topic, test)
        // Read until every new record arrived (a refused hand-off commit adds records read again), at most 30 s.
        var firstRecords: [KafkaMessage] = []
        var secondRecords: [KafkaMessage] = []
        var values: [Int] { (firstRecords + secondRecords).compactMap { $0.value?.text }.compactMap(Int.init) }
        let deadline = ContinuousClock.now + .seconds(30)
        while !Set(values).isSuperset(of: 40..<80), ContinuousClock.now < deadline {
            let more = await read(1, from: [first, second], timeout: .seconds(1))
            firstRecords += more[0]
            secondRecords += more[1]
        }
        await first.close()
        await second.close()
        #expect(!firstRecords.isEmpty)
        #expect(!secondRecords.isEmpty)
        // Nothing is missing; what was read before the rebalance is read again only when the hand-off commit was
        // refused.
        #expect(Set(values).isSuperset(of: 40..<80))
        if refusedCommits.all.isEmpty {
            #expect(values.sorted() == Array(40..<80))
        } else {
            #expect(values.allSatisfy { $0 < 80 })
        }
    }

    /// The embedded broker alone, without Sluice's worker: while a new member's join is pending, its coordinator
    /// refuses every commit of the current members with REBALANCE_IN_PROGRESS (it holds the group in its joining
    /// state for `session.timeout.ms` - 1 s, twice for a cooperative rebalance). A real Kafka coordinator accepts
    /// commits of the current generation while it prepares a rebalance. docs/operations.md documents the
    /// difference and what it costs on the embedded broker (re-served requests, slower joins).
    @Test func theEmbeddedCoordinatorRefusesCommitsWhileAMemberJoins() async throws {
        let test = try TestCluster()
        let topic = try test.topic("joining", partitions: 2)
        try await produce(0..<10, to: topic, test)
        let first = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "joining", ["enable.auto.commit": "false"]),
            topics: [topic], logger: testLogger)
        #expect(await read(1, from: first).count == 1)
        var offset: Int64 = 1
        func commitProgress() async -> KafkaError.Code? {
            offset += 1
            do {
                try first.storeOffsets(Dictionary(uniqueKeysWithValues: first.assignment.map { ($0, offset) }))
                try await first.commit()
                return nil
            } catch let error as KafkaError {
                return error.code
            } catch {
                Issue.record("\(error)")
                return nil
            }
        }
        #expect(await commitProgress() == nil, "a settled group accepts commits")

        let second = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "joining", ["enable.auto.commit": "false"]),
            topics: [topic], logger: testLogger)
        var refusals: [KafkaError.Code] = []
        // The join takes two rounds of the mock's rebalance window (`session.timeout.ms` − 1 s each) and usually ends
        // within 15 s; a clean-clone CI run on a busy machine once needed more than 30.
        let deadline = ContinuousClock.now + .seconds(60)
        while second.assignment.isEmpty, ContinuousClock.now < deadline {
            if let refusal = await commitProgress() { refusals.append(refusal) }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(!second.assignment.isEmpty)
        #expect(refusals.contains(.rebalanceInProgress), "\(refusals)")
        #expect(Set(refusals).isSubset(of: [.rebalanceInProgress, .illegalGeneration]), "\(refusals)")
        // Once the join is done, commits are accepted again.
        #expect(await eventually { await commitProgress() == nil })
        await first.close()
        await second.close()
    }

    /// librdkafka before 2.3.0 aborts the process when a (cooperative-)sticky member is destroyed after it joined its
    /// group but before its first assignment (librdkafka issue 4312). The coordinator here refuses every SyncGroup,
    /// so the member stays in that window; closing it must return, and the process must live on.
    @Test func aMemberClosedBeforeItsFirstAssignmentClosesCleanly() async throws {
        let test = try TestCluster()
        let topic = try test.topic("mid-join", partitions: 2)
        test.cluster.pushRequestErrors(.syncGroup, Array(repeating: .rebalanceInProgress, count: 10_000))
        let consumer = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "mid-join"), topics: [topic], logger: testLogger)
        #expect(await eventually { await consumer.memberID() != nil }, "the member never joined")
        #expect(!consumer.hasJoinedGroup)
        await consumer.close()
        #expect(await consumer.memberID() == nil)
        #expect(consumer.assignment.isEmpty)
    }

    /// The mock coordinator sometimes refuses the revoke's commit with REBALANCE_IN_PROGRESS (it holds the group in
    /// rebalance until the revoking member rejoins, which it does after the hook; a real broker accepts a commit of
    /// the current generation then). The consumer reports that refusal through `onError`; such a round cannot show the
    /// hand-off, so the scenario runs again, up to 5 times, and must succeed once. Nothing may be missing in any round.
    @Test func offsetsStoredInTheRevokeHookAreCommittedBeforeHandOff() async throws {
        var handedOff = false
        for round in 0..<5 where !handedOff {
            let (values, refused) = try await handOff(round: round)
            #expect(Set(values).isSuperset(of: 20..<40), "round \(round) missed records: \(values.sorted())")
            if !refused {
                // Nothing read before the hand-off is read again.
                #expect(values.sorted() == Array(20..<40))
                handedOff = true
            }
        }
        #expect(handedOff, "the mock refused the revoke's commit in every round")
    }

    /// Two members hand a partition over after 20 records; returns the values read after the hand-off and whether
    /// the coordinator refused the revoke's commit.
    private func handOff(round: Int) async throws -> (values: [Int], refused: Bool) {
        let test = try TestCluster()
        let topic = try test.topic("handoff\(round)", partitions: 2)
        try await produce(0..<20, to: topic, test)

        let progress = Mutex<[TopicPartition: Int64]>([:])
        let firstBox = Mutex<KafkaConsumer?>(nil)
        let refused = Mutex(false)
        let first = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "handoff\(round)", ["enable.auto.commit": "false"]),
            topics: [topic],
            rebalanceHandler: RebalanceHandler(partitionsRevoked: { partitions, _ in
                // A worker drains here: it stores what it finished, and the consumer commits it.
                let finished = progress.withLock { $0 }.filter { partitions.contains($0.key) }
                try? firstBox.withLock { $0 }?.storeOffsets(finished)
            }),
            logger: testLogger,
            onError: { error in
                // The mock coordinator refuses a commit while the group is joining (docs/operations.md); any other
                // failure of the revoke's commit is a defect.
                guard error.message.contains("committing on revoke") else { return }
                #expect(error.code == .rebalanceInProgress, "\(error)")
                refused.withLock { $0 = true }
            })
        firstBox.withLock { $0 = first }
        let early = await read(20, from: first)
        #expect(early.count == 20)
        progress.withLock { $0 = nextOffsets(after: early) }

        // A second member joins: the first gives up partitions, committing what the hook stored.
        let second = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "handoff\(round)", ["enable.auto.commit": "false"]),
            topics: [topic], logger: testLogger)
        #expect(await eventually { !second.assignment.isEmpty })
        try await produce(20..<40, to: topic, test)
        // 20 records at least; a refused commit adds those read again.
        let later = await read(20, from: [first, second]).flatMap { $0 }
        let more =
            refused.withLock { $0 } ? await read(40, from: [first, second], timeout: .seconds(3)).flatMap { $0 } : []
        await first.close()
        await second.close()
        return ((later + more).compactMap { $0.value?.text }.compactMap(Int.init), refused.withLock { $0 })
    }

    @Test func committedOffsetsAreWhereARestartResumes() async throws {
        let test = try TestCluster()
        let topic = try test.topic("resume", partitions: 1)
        try await produce(0..<20, to: topic, test)
        let partition = TopicPartition(topic, 0)

        let first = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "resume", ["enable.auto.commit": "false"]),
            topics: [topic], logger: testLogger)
        let records = await read(20, from: first)
        #expect(records.count == 20)
        try first.storeOffset(partition, nextOffset: 10)
        try await first.commit()
        #expect(try await first.committedOffsets([partition]) == [partition: 10])
        await first.close()

        let second = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "resume"), topics: [topic], logger: testLogger)
        let resumed = await read(10, from: second)
        await second.close()
        #expect(resumed.map(\.offset) == Array(10..<20))
    }

    @Test func storingAnOffsetForAPartitionNotAssignedIsAnError() async throws {
        let test = try TestCluster()
        let topic = try test.topic("unassigned", partitions: 1)
        let consumer = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "unassigned"), topics: [topic], logger: testLogger)
        #expect(throws: KafkaError.self) { try consumer.storeOffset(TopicPartition("elsewhere", 3), nextOffset: 1) }
        await consumer.close()
    }

    @Test func fullBufferPausesPartitionsAndDrainingResumesThemWithNothingLost() async throws {
        let test = try TestCluster()
        let topic = try test.topic("backpressure", partitions: 2)
        try await produce(0..<400, to: topic, test)

        let consumer = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "backpressure"), topics: [topic], bufferCapacity: 8,
            logger: testLogger)
        // Nobody reads: the buffer fills and the consumer pauses what it is assigned.
        #expect(await eventually { consumer.pausedPartitions.count == 2 })
        let records = await read(400, from: consumer)
        #expect(await eventually { consumer.pausedPartitions.isEmpty })
        await consumer.close()

        #expect(records.count == 400)
        #expect(Set(records.compactMap { $0.value?.text }).count == 400)
        for partition in Set(records.map(\.partition)) {
            let offsets = records.filter { $0.partition == partition }.map(\.offset)
            #expect(offsets == Array(0..<Int64(offsets.count)))
        }
    }

    @Test func pausedPartitionDeliversNothingUntilResumed() async throws {
        let test = try TestCluster()
        let topic = try test.topic("pause", partitions: 1)
        let partition = TopicPartition(topic, 0)
        let consumer = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "pause"), topics: [topic], logger: testLogger)
        #expect(await eventually { consumer.assignment == [partition] })
        consumer.pause([partition])
        #expect(await eventually { consumer.pausedPartitions == [partition] })
        try await produce(0..<5, to: topic, test)
        #expect(await read(1, from: consumer, timeout: .seconds(1)).isEmpty)
        consumer.resume([partition])
        let records = await read(5, from: consumer)
        await consumer.close()
        #expect(records.map(\.offset) == Array(0..<5))
    }
}
