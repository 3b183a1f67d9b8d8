import Kafka
import Testing

@Suite("Errors: bad configuration, failed deliveries, broker outages")
struct FailureTests {
    @Test func unknownPropertyIsAnErrorNamingIt() throws {
        let error = try #require(throws: KafkaError.self) { try KafkaConfiguration(["no.such.property": "1"]) }
        #expect(error.code == .invalidArgument)
        #expect(error.message.contains("no.such.property"))
    }

    @Test func invalidValueIsAnErrorNamingKeyAndValue() throws {
        let error = try #require(throws: KafkaError.self) { try KafkaConfiguration(["linger.ms": "soon"]) }
        #expect(error.message.contains("linger.ms"))
        #expect(error.message.contains("soon"))
    }

    @Test func assignmentWithoutEqualsSignIsAnErrorNamingIt() throws {
        let error = try #require(throws: KafkaError.self) {
            try KafkaConfiguration(assignments: ["linger.ms=1", "acks"])
        }
        #expect(error.message.contains("'acks'"))
        let parsed = try KafkaConfiguration(assignments: ["client.id=a=b"])
        #expect(parsed["client.id"] == "a=b")
    }

    @Test func secretValuesAreNotRepeatedInErrors() throws {
        let error = try #require(throws: KafkaError.self) {
            try KafkaConfiguration(["ssl.key.password": "hunter2", "no.such.password.key": "hunter2"])
        }
        #expect(error.message.contains("no.such.password.key"))
        #expect(!error.message.contains("hunter2"))
    }

    @Test func conflictingPropertiesFailWhenTheClientIsCreated() throws {
        let configuration = try KafkaConfiguration([
            "bootstrap.servers": "127.0.0.1:1", "enable.idempotence": "true", "acks": "0",
        ])
        let error = try #require(throws: KafkaError.self) {
            try KafkaProducer(configuration: configuration, logger: testLogger)
        }
        #expect(error.message.contains("acks"))
    }

    @Test func consumerRefusesAutomaticOffsetStoreAndMissingGroup() throws {
        let test = try TestCluster()
        let automatic = try #require(throws: KafkaError.self) {
            try KafkaConsumer(
                configuration: test.consumerConfiguration(group: "g", ["enable.auto.offset.store": "true"]),
                topics: ["x"], logger: testLogger)
        }
        #expect(automatic.message.contains("enable.auto.offset.store"))
        let noGroup = try #require(throws: KafkaError.self) {
            try KafkaConsumer(configuration: test.producerConfiguration(), topics: ["x"], logger: testLogger)
        }
        #expect(noGroup.message.contains("group.id"))
    }

    @Test func brokerRefusingAProduceFailsTheDelivery() async throws {
        let test = try TestCluster()
        let topic = try test.topic("refused", partitions: 1)
        let producer = try KafkaProducer(configuration: test.producerConfiguration(), logger: testLogger)
        _ = try await producer.send(OutgoingMessage(topic: topic, value: "warm".bytes))
        test.cluster.pushRequestErrors(.produce, [.messageSizeTooLarge])
        let error = try await #require(throws: KafkaError.self) {
            try await producer.send(OutgoingMessage(topic: topic, value: "refused".bytes))
        }
        #expect(error.code == .messageSizeTooLarge)
        #expect(error.message.contains(topic))
        // The producer goes on working after a failed delivery.
        let report = try await producer.send(OutgoingMessage(topic: topic, value: "accepted".bytes))
        #expect(report.offset == 1)
        await producer.close()
    }

    @Test func producingToAnUnknownTopicIsAnError() async throws {
        let test = try TestCluster()
        let missing = test.name("missing")
        // The mock creates any topic a client asks about; make it answer as a cluster without auto-creation does.
        test.cluster.setTopicError(missing, .unknownTopicOrPartition)
        let producer = try KafkaProducer(
            configuration: test.producerConfiguration([
                "message.timeout.ms": "5000", "topic.metadata.propagation.max.ms": "100",
            ]),
            logger: testLogger)
        let error = try await #require(throws: KafkaError.self) {
            try await producer.send(OutgoingMessage(topic: missing, value: "lost?".bytes))
        }
        #expect([.unknownTopic, .unknownTopicOrPartition].contains(error.code))
        await producer.close()
    }

    @Test func sendingToAPartitionThatDoesNotExistFailsAtOnce() async throws {
        let test = try TestCluster()
        let topic = try test.topic("partitions", partitions: 2)
        let producer = try KafkaProducer(configuration: test.producerConfiguration(), logger: testLogger)
        _ = try await producer.send(OutgoingMessage(topic: topic, value: "warm".bytes))
        await #expect(throws: KafkaError.self) {
            try await producer.send(OutgoingMessage(topic: topic, partition: 7, value: "nowhere".bytes))
        }
        await producer.close()
    }

    @Test func brokerOutageSurfacesErrorsThenRecoversWithNothingLost() async throws {
        let test = try TestCluster()
        let topic = try test.topic("outage", partitions: 2)
        let clientErrors = Collector<KafkaError>()
        let producer = try KafkaProducer(
            configuration: test.producerConfiguration(["message.timeout.ms": "60000"]), logger: testLogger,
            onError: { clientErrors.append($0) })
        for index in 0..<10 { _ = try await producer.send(OutgoingMessage(topic: topic, value: "\(index)".bytes)) }

        try test.cluster.setBrokerDown(1)
        // Records sent during the outage wait in librdkafka and are delivered once the broker is back.
        let delivered = Collector<Result<DeliveryReport, KafkaError>>()
        for index in 10..<20 {
            try await producer.send(OutgoingMessage(topic: topic, value: "\(index)".bytes)) { delivered.append($0) }
        }
        // A record that may not wait that long fails: the outage is visible to the sender.
        let impatient = try KafkaProducer(
            configuration: test.producerConfiguration(["message.timeout.ms": "500"]), logger: testLogger)
        let timedOut = try await #require(throws: KafkaError.self) {
            try await impatient.send(OutgoingMessage(topic: topic, value: "impatient".bytes))
        }
        #expect(timedOut.code == .messageTimedOut)
        #expect(await eventually { !clientErrors.all.isEmpty })
        #expect(delivered.all.isEmpty)

        try test.cluster.setBrokerUp(1)
        try await producer.flush(timeout: .seconds(30))
        #expect(delivered.all.count == 10)
        #expect(delivered.all.allSatisfy { (try? $0.get()) != nil })
        await producer.close()
        await impatient.close()

        let consumer = try KafkaConsumer(
            configuration: test.consumerConfiguration(group: "outage"), topics: [topic], logger: testLogger)
        let records = await read(20, from: consumer)
        await consumer.close()
        #expect(Set(records.compactMap { $0.value?.text }) == Set((0..<20).map { "\($0)" }))
        #expect(records.count == 20)
    }
}
