import Kafka
import Testing

@Suite("Producing and consuming through the mock cluster")
struct ProduceConsumeTests {
    @Test func recordsKeepTheirKeysValuesAndHeaders() async throws {
        let test = try TestCluster()
        let topic = try test.topic("records", partitions: 3)
        let producer = try KafkaProducer(configuration: test.producerConfiguration(), logger: testLogger)
        var reports: [Int: DeliveryReport] = [:]
        for index in 0..<30 {
            let message = OutgoingMessage(
                topic: topic, partition: index % 5 == 0 ? 2 : nil, key: "key-\(index)".bytes,
                value: "value-\(index)".bytes,
                headers: [KafkaHeader("id", "\(index)"), KafkaHeader("empty", []), KafkaHeader("absent", nil)])
            reports[index] = try await producer.send(message)
        }
        #expect(reports[5]?.partition == 2)
        await producer.close()

        let consumer = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "records"), topics: [topic], logger: testLogger)
        let records = await read(30, from: consumer)
        await consumer.close()

        #expect(records.count == 30)
        for record in records {
            let index = try #require(record.headers.string(named: "id").flatMap(Int.init))
            #expect(record.key == "key-\(index)".bytes)
            #expect(record.value == "value-\(index)".bytes)
            #expect(record.headers.map(\.name) == ["id", "empty", "absent"])
            #expect(record.headers.value(named: "empty") == [])
            #expect(record.headers.value(named: "absent") == nil)
            #expect(record.partition == reports[index]?.partition)
            #expect(record.offset == reports[index]?.offset)
            #expect(record.timestampMilliseconds != nil)
        }
        // Within a partition, records arrive in offset order.
        for partition in Set(records.map(\.partition)) {
            let offsets = records.filter { $0.partition == partition }.map(\.offset)
            #expect(offsets == offsets.sorted())
        }
    }

    /// With `onMessages` the records go to the handler on the poll thread, in order per partition, none to the
    /// sequence, and the offsets of what it handled are stored: a consumer of the same group after it starts at
    /// the end.
    @Test func aHandlerOnThePollThreadTakesTheRecordsAndTheirOffsetsAreStored() async throws {
        let test = try TestCluster()
        let topic = try test.topic("handled", partitions: 2)
        let producer = try KafkaProducer(configuration: test.producerConfiguration(), logger: testLogger)
        for index in 0..<40 {
            _ = try await producer.send(
                OutgoingMessage(topic: topic, partition: Int32(index % 2), key: nil, value: "\(index)".bytes))
        }
        let (handled, arrivals) = AsyncStream.makeStream(of: [KafkaMessage].self)
        let consumer = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "handled"), topics: [topic],
            onMessages: { arrivals.yield($0) }, logger: testLogger)
        var records: [KafkaMessage] = []
        for await batch in handled {
            records += batch
            if records.count >= 40 { break }
        }
        #expect(records.count == 40)
        for partition: Int32 in [0, 1] {
            #expect(records.filter { $0.partition == partition }.map(\.offset) == Array(0..<20))
        }
        // The sequence gets nothing: it ends when the consumer closes.
        let sequence = Task { await consumer.nextBatch(limit: 10) }
        await consumer.close()
        #expect(await sequence.value.isEmpty)

        _ = try await producer.send(OutgoingMessage(topic: topic, partition: 0, key: nil, value: "after".bytes))
        await producer.close()
        let next = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "handled"), topics: [topic], logger: testLogger)
        let after = await next.nextBatch(limit: 10)
        #expect(after.map(\.value) == ["after".bytes] && after.first?.offset == 20)
        await next.close()
    }

    @Test func highWatermarksAreWhatTheLastFetchSaw() async throws {
        let test = try TestCluster()
        let topic = try test.topic("watermarks", partitions: 2)
        let producer = try KafkaProducer(configuration: test.producerConfiguration(), logger: testLogger)
        for index in 0..<25 {
            _ = try await producer.send(OutgoingMessage(topic: topic, partition: 0, key: nil, value: "\(index)".bytes))
        }
        await producer.close()

        let consumer = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "watermarks"), topics: [topic], bufferCapacity: 4,
            logger: testLogger)
        // One record read of 25: the fetch that brought it told the partition's end, which is what lag is measured to.
        let first = await consumer.nextBatch(limit: 1)
        #expect(first.map(\.offset) == [0])
        let watermarks = consumer.highWatermarks([TopicPartition(topic, 0), TopicPartition(topic, 7)])
        #expect(watermarks == [TopicPartition(topic, 0): 25])
        await consumer.close()
        #expect(consumer.highWatermarks([TopicPartition(topic, 0)]).isEmpty)
    }

    @Test func tombstonesAndMissingKeysAreOrdinaryRecords() async throws {
        let test = try TestCluster()
        let topic = try test.topic("tombstones", partitions: 1)
        let producer = try KafkaProducer(configuration: test.producerConfiguration(), logger: testLogger)
        _ = try await producer.send(OutgoingMessage(topic: topic, key: "gone".bytes, value: nil))
        _ = try await producer.send(OutgoingMessage(topic: topic, key: nil, value: "no key".bytes))
        _ = try await producer.send(OutgoingMessage(topic: topic, key: [], value: []))
        _ = try await producer.send(OutgoingMessage(topic: topic, key: nil, value: nil))
        await producer.close()

        let consumer = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "tombstones"), topics: [topic], logger: testLogger)
        let records = await read(4, from: consumer)
        await consumer.close()

        try #require(records.count == 4)
        #expect(records[0].key == "gone".bytes && records[0].value == nil)
        #expect(records[1].key == nil && records[1].value == "no key".bytes)
        #expect(records[2].key == [] && records[2].value == [])
        #expect(records[3].key == nil && records[3].value == nil)
        #expect(records.map(\.headers.isEmpty) == [true, true, true, true])
    }

    @Test func deliveryHandlerRunsOnceForEveryRecord() async throws {
        let test = try TestCluster()
        let topic = try test.topic("handlers", partitions: 2)
        // A small queue, so that sends wait for room (QUEUE_FULL) instead of failing.
        let producer = try KafkaProducer(
            configuration: test.producerConfiguration(["queue.buffering.max.messages": "16"]), logger: testLogger)
        let delivered = Collector<Result<DeliveryReport, KafkaError>>()
        for index in 0..<500 {
            try await producer.send(OutgoingMessage(topic: topic, value: "\(index)".bytes)) { delivered.append($0) }
        }
        try await producer.flush(timeout: .seconds(20))
        #expect(producer.outstanding == 0)
        await producer.close()
        let reports = delivered.all.compactMap { try? $0.get() }
        #expect(delivered.all.count == 500)
        #expect(reports.count == 500)
        #expect(Set(reports.map { "\($0.partition)/\($0.offset)" }).count == 500)
    }

    /// What librdkafka uses for a property: the value set, under its name or an alias, else librdkafka's default (what
    /// a producer with a prompt lane reads `linger.ms` from).
    @Test func theEffectiveValueOfAPropertyIsTheOneSetOrLibrdkafkasDefault() throws {
        #expect(try KafkaConfiguration().effectiveValue("linger.ms") == "5")
        #expect(try KafkaConfiguration(["linger.ms": "0.5"]).effectiveValue("linger.ms") == "0.5")
        #expect(try KafkaConfiguration(["queue.buffering.max.ms": "7"]).effectiveValue("linger.ms") == "7")
        #expect(try KafkaConfiguration().effectiveValue("no.such.property") == nil)
    }

    /// With a prompt lane, a record sent `promptly` goes out at once, whatever `linger.ms` says; one sent otherwise, or
    /// promptly while the prompt lane still has a record in flight, waits for `linger.ms` as any batched record does.
    @Test func aRecordSentPromptlyDoesNotWaitForTheLinger() async throws {
        let test = try TestCluster()
        let topic = try test.topic("prompt", partitions: 1)
        // A minute of linger: a record that waited for it would not be delivered while the test runs.
        let producer = try KafkaProducer(
            configuration: test.producerConfiguration(["linger.ms": "60000"]), promptLane: true, logger: testLogger)
        let reports = (0..<4).map { _ in Collector<Result<DeliveryReport, KafkaError>>() }
        func send(_ index: Int, promptly: Bool) throws {
            try producer.sendNow(OutgoingMessage(topic: topic, value: "\(index)".bytes), promptly: promptly) {
                reports[index].append($0)
            }
        }
        try send(0, promptly: false)
        try send(1, promptly: true)
        #expect(await eventually(timeout: .seconds(20)) { reports[1].all.count == 1 && producer.outstanding == 1 })
        #expect(reports[0].all.isEmpty)

        // The broker answers a second after it is asked: the next prompt record is still in flight when the one after
        // it is sent, which therefore batches.
        try test.cluster.setRoundTripTime(broker: 1, milliseconds: 1000)
        try send(2, promptly: true)
        try send(3, promptly: true)
        #expect(await eventually(timeout: .seconds(20)) { reports[2].all.count == 1 && producer.outstanding == 2 })
        #expect(reports[0].all.isEmpty && reports[3].all.isEmpty)

        // A flush sends the batched ones without waiting out the linger.
        try test.cluster.setRoundTripTime(broker: 1, milliseconds: 0)
        try await producer.flush(timeout: .seconds(20))
        let offsets = try reports.map { try #require(try $0.all.first?.get().offset) }
        #expect(offsets[1] == 0 && offsets[2] == 1 && Set(offsets[0...3]) == [0, 1, 2, 3])
        #expect(producer.outstanding == 0)
        await producer.close()
    }

    /// The round handler runs after every round of delivery reports, and always from the same depth of the poll
    /// thread's stack: a closure read from its lock through a reabstraction thunk would call through two more thunks
    /// every round (swiftlang/swift#91348) and end in a stack overflow.
    @Test func eachDeliveryRoundCallsItsHandlerFromTheSameDepth() async throws {
        let test = try TestCluster()
        let topic = try test.topic("rounds", partitions: 1)
        let producer = try KafkaProducer(configuration: test.producerConfiguration(), logger: testLogger)
        let stackAddresses = Collector<UInt>()
        producer.onDeliveryRound {
            var marker: UInt8 = 0
            stackAddresses.append(withUnsafeMutablePointer(to: &marker) { UInt(bitPattern: $0) })
        }
        for index in 0..<100 {
            // One record at a time: each report comes in a round of its own.
            _ = try await producer.send(OutgoingMessage(topic: topic, value: "\(index)".bytes))
        }
        let addresses = stackAddresses.all
        await producer.close()
        #expect(addresses.count >= 50)
        // Two thunks per earlier round would move the handler's frame by kilobytes over 100 rounds.
        #expect((addresses.max() ?? 0) - (addresses.min() ?? 0) < 512)
    }

    @Test func closingEndsTheRecordSequence() async throws {
        let test = try TestCluster()
        let topic = try test.topic("close", partitions: 1)
        let consumer = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "close"), topics: [topic], logger: testLogger)
        let reader = Task { () -> Int in
            var count = 0
            for await _ in consumer.messages { count += 1 }
            return count
        }
        try await Task.sleep(for: .milliseconds(200))
        await consumer.close()
        #expect(await reader.value == 0)
        var iterator = consumer.messages.makeAsyncIterator()
        #expect(await iterator.next() == nil)
    }
}
