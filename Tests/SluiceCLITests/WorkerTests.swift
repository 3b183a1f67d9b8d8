import Foundation
import Testing

/// `sluice worker` as a process, called by Python's confluent-kafka over the documented protocol.
@Suite("sluice worker, end to end", .serialized)
struct WorkerTests {
    @Test func everyRequestIsAnsweredOnceWithTheRightOutput() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(["--capture", "REALTIME"])
        let specs: [[String: Any]] = (0..<200).map { index in
            ["id": "r\(index)", "value": ["text": "word\(index) and more words \(index)"], "key": "k\(index % 7)"]
        }
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0)
        #expect(responses.count == 200)
        #expect(Set(responses.compactMap { $0["id"] as? String }).count == 200)
        for response in responses {
            let id = try #require(response["id"] as? String)
            let index = try #require(Int(id.dropFirst()))
            let value = try #require(response["value"] as? [String: Any])
            #expect(value["status"] as? String == "ok")
            #expect(value["request_id"] as? String == id)
            #expect(value["capture"] as? String == "REALTIME")
            let output = try #require(value["output"] as? [String: Any])
            #expect(output["tokens"] as? Int == 5)
            #expect(output["first"] as? String == "word\(index)")
            #expect(output["last"] as? String == "\(index)")
            #expect(response["key"] as? String == "k\(index % 7)")
            #expect((response["headers"] as? [String: String])?["sluice-status"] == "ok")
        }
        #expect(await worker.stop() == 0)
        await cluster.stop()
    }

    @Test func badInputGetsItsErrorCodeAndADeadLetterAndTheNextRequestIsServed() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(["--max-payload-bytes", "200", "--capture", "OFF"])
        let specs: [[String: Any]] = [
            ["id": "not-json", "raw": "{not json"],
            ["id": "wrong-type", "value": ["text": 42]],
            ["id": "too-large", "value": ["text": String(repeating: "x", count: 300)]],
            ["id": "expired", "value": ["text": "late"], "headers": ["sluice-deadline": "1000"]],
            ["id": "bad-deadline", "value": ["text": "a"], "headers": ["sluice-deadline": "soon"]],
            ["id": "elsewhere", "value": ["text": "a"], "headers": ["sluice-reply-to": "somebody.else"]],
            ["id": "fine", "value": ["text": "still served"]],
        ]
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0, "\(responses)")
        var codes: [String: String] = [:]
        for response in responses {
            let value = try #require(response["value"] as? [String: Any])
            let error = value["error"] as? [String: Any]
            codes[response["id"] as? String ?? "?"] = error?["code"] as? String ?? "ok"
        }
        #expect(
            codes == [
                "not-json": "invalid_input", "wrong-type": "invalid_input", "too-large": "payload_too_large",
                "expired": "deadline_exceeded", "bad-deadline": "invalid_input", "elsewhere": "reply_to_not_allowed",
                "fine": "ok",
            ])
        // Failed requests (not the expired one, not the good one) are copied to the DLQ with why and whence.
        let letters = try await cluster.read(cluster.deadLetters)
        let byID = Dictionary(
            letters.map { (($0["headers"] as? [String: String])?["sluice-request-id"] ?? "?", $0) },
            uniquingKeysWith: { first, _ in first })
        #expect(Set(byID.keys) == ["not-json", "wrong-type", "too-large", "bad-deadline", "elsewhere"])
        let copy = try #require(byID["not-json"])
        let headers = try #require(copy["headers"] as? [String: String])
        #expect(headers["sluice-error-code"] == "invalid_input")
        #expect(headers["sluice-original-topic"] == cluster.requests)
        #expect(headers["sluice-original-partition"].flatMap(Int.init) != nil)
        #expect(headers["sluice-original-offset"].flatMap(Int.init) != nil)
        #expect(copy["value"] as? String == "{not json")
        let metrics = try #require(try await worker.metrics())
        #expect(
            metrics.split(separator: "\n").contains {
                $0.wholeMatch(
                    of:
                        /sluice_requests_total\{pipeline="text-stats",capture="[^"]+",status="error",code="invalid_input"\} 3/
                ) != nil
            },
            "\(metrics)")
        #expect(hasSample(metrics, #"sluice_dead_letters_total{pipeline="text-stats"} 5"#))
        #expect(await worker.stop() == 0)
        await cluster.stop()
    }

    /// Requests over the payload limit, and failing requests whose dead-letter copy would pass librdkafka's default
    /// `message.max.bytes` of 1 000 000, between valid ones, with four slots: each is answered once with its code
    /// and copied once (a value too large for the copy cut and marked), and the valid ones are served.
    @Test(arguments: ["BATCH", "REALTIME", "OFF", "MEMORY"])
    func oversizedAndNearLimitRequestsAreAnsweredAndHoldNoSlot(capture: String) async throws {
        let cluster = try await ServingCluster.start(partitions: 8, deadLetterPartitions: 8)
        let worker = try await cluster.startWorker(["--capture", capture, "--concurrency", "4"])
        let huge: [[Any]] = [["{\"text\": \"", 1], ["ab ", 700_000], ["\"}", 1]]  // 2 100 012 bytes
        let nearInvalid: [[Any]] = [["{not json ", 1], ["x", 1_020_000]]  // 1 020 010 bytes
        let nearValid: [[Any]] = [["{\"text\": \"", 1], ["ab ", 330_000], ["\"}", 1]]  // 990 012 bytes
        var specs: [[String: Any]] = []
        var expected: [String: String] = [:]
        for round in 0..<3 {
            specs.append(["id": "huge-\(round)", "parts": huge, "key": "h\(round)"])
            expected["huge-\(round)"] = "payload_too_large"
            specs.append(["id": "near-invalid-\(round)", "parts": nearInvalid, "key": "n\(round)"])
            expected["near-invalid-\(round)"] = "invalid_input"
            if round < 2 {
                specs.append(["id": "near-valid-\(round)", "parts": nearValid, "key": "v\(round)"])
                expected["near-valid-\(round)"] = "ok"
            }
            for index in 0..<6 {
                specs.append(["id": "ok-\(round)-\(index)", "value": ["text": "fine \(index)"], "key": "k\(index)"])
                expected["ok-\(round)-\(index)"] = "ok"
            }
        }
        let (status, responses) = try await cluster.call(specs, timeout: 90)
        #expect(
            status == 0, "unanswered: \(Set(expected.keys).subtracting(responses.compactMap { $0["id"] as? String }))")
        #expect(responses.count == specs.count, "answered more than once")
        var codes: [String: String] = [:]
        for response in responses {
            let value = try #require(response["value"] as? [String: Any])
            codes[response["id"] as? String ?? "?"] = (value["error"] as? [String: Any])?["code"] as? String ?? "ok"
            if let output = value["output"] as? [String: Any],
                (response["id"] as? String)?.hasPrefix("near-valid") == true
            {
                #expect(output["tokens"] as? Int == 330_000)
            }
        }
        #expect(codes == expected)

        let letters = try await cluster.read(cluster.deadLetters)
        var copies: [String: [[String: Any]]] = [:]
        for letter in letters {
            copies[(letter["headers"] as? [String: String])?["sluice-request-id"] ?? "?", default: []].append(letter)
        }
        #expect(Set(copies.keys) == Set(expected.filter { $0.value != "ok" }.keys))
        for (id, found) in copies {
            #expect(found.count == 1, "\(id) copied \(found.count) times")
            let copy = try #require(found.first)
            let headers = try #require(copy["headers"] as? [String: String])
            if id.hasPrefix("huge") {
                #expect(headers["sluice-truncated"] == "true" && headers["sluice-original-size"] == "2100012")
                #expect((copy["size"] as? Int ?? .max) < 1_114_112)
            } else {
                #expect(headers["sluice-truncated"] == nil && copy["size"] as? Int == 1_020_010)
            }
        }
        let metrics = try #require(try await worker.metrics())
        #expect(hasSample(metrics, #"sluice_dead_letters_total{pipeline="text-stats"} 6"#))
        #expect(!metrics.contains("sluice_delivery_refusals_total{"), "\(metrics)")
        #expect(try await worker.health()?.inFlight == 0)
        #expect(await worker.stop() == 0)
        await cluster.stop()
    }

    /// With the producer's `message.max.bytes` at 200 000, an output too large to send is answered `internal`
    /// (once, on the responses topic, whichever topic it was for) and copied to the dead-letter topic, cut to fit.
    @Test func aResponseKafkaRefusesIsAnsweredInternalAndCopied() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(["--capture", "REALTIME", "--kafka", "message.max.bytes=200000"])
        // text-stats echoes the first and last token: one 300 000-byte token makes a 600 000-byte output.
        let bigToken: [[Any]] = [["{\"text\": \"", 1], ["y", 300_000], ["\"}", 1]]
        let specs: [[String: Any]] = [
            ["id": "big-output", "parts": bigToken],
            ["id": "big-elsewhere", "parts": bigToken, "headers": ["sluice-reply-to": "text-stats.responses.client"]],
            ["id": "fine", "value": ["text": "still served"]],
        ]
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0 && responses.count == 3, "\(responses.map { $0["id"] ?? "?" })")
        var errors: [String: [String: Any]] = [:]
        for response in responses {
            let value = try #require(response["value"] as? [String: Any])
            errors[response["id"] as? String ?? "?"] = value["error"] as? [String: Any]
        }
        #expect(errors["fine"] == nil)
        #expect(errors["big-output"]?["code"] as? String == "internal")
        #expect((errors["big-output"]?["message"] as? String)?.contains("MSG_SIZE_TOO_LARGE") == true)
        #expect(errors["big-elsewhere"]?["code"] as? String == "internal")
        #expect(
            (errors["big-elsewhere"]?["message"] as? String)?.contains("reply-to topic 'text-stats.responses.client'")
                == true)
        let letters = try await cluster.read(cluster.deadLetters)
        #expect(letters.count == 2)
        for letter in letters {
            let headers = try #require(letter["headers"] as? [String: String])
            #expect(headers["sluice-error-code"] == "internal")
            #expect(headers["sluice-truncated"] == "true" && headers["sluice-original-size"] == "300012")
            #expect((letter["size"] as? Int ?? .max) < 200_000)
        }
        let metrics = try #require(try await worker.metrics())
        #expect(
            hasSample(
                metrics,
                #"sluice_delivery_refusals_total{pipeline="text-stats",record="response",code="MSG_SIZE_TOO_LARGE"} 2"#),
            "\(metrics)")
        #expect(await worker.stop() == 0)
        await cluster.stop()
    }

    @Test func batchLineageIsInKafkaBeforeTheResponse() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(["--capture", "BATCH"])
        let specs: [[String: Any]] = (0..<20).map { ["id": "b\($0)", "value": ["text": "one two three \($0)"]] }
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0)
        let records = try await cluster.read(cluster.lineage)
        for response in responses {
            let value = try #require(response["value"] as? [String: Any])
            let runID = try #require(value["run_id"] as? String)
            // The whole run in one record (lineage format v2), keyed by run id.
            let runRecords = records.filter { ($0["value"] as? [String: Any])?["run_id"] as? String == runID }
            #expect(runRecords.count == 1)
            let record = try #require(runRecords.first)
            #expect(record["key"] as? String == runID)
            let events = (record["value"] as? [String: Any])?["events"] as? [[String: Any]] ?? []
            let types = events.compactMap { $0["type"] as? String }
            #expect(types.first == "run_started" && types.last == "run_completed" && types.count == 9, "\(types)")
            #expect(events.compactMap { $0["seq"] as? Int } == Array(0..<9))
            // Produced (create time) no later than the response: the response waited for its acknowledgement.
            #expect(record["timestamp"] as? Int ?? .max <= response["timestamp"] as? Int ?? 0)
        }
        #expect(await worker.stop() == 0)
        await cluster.stop()
    }

    /// REALTIME's records carry whatever of a run the lineage thread finds queued: under load and when idle, every
    /// answered run's events arrive complete, in `seq` order, on one partition.
    @Test func realtimeLineageArrivesCompleteAndInOrderUnderLoadAndWhenIdle() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(["--capture", "REALTIME"])
        let burst: [[String: Any]] = (0..<400).map { ["id": "l\($0)", "value": ["text": "one two three \($0)"]] }
        let (burstStatus, burstResponses) = try await cluster.call(burst)
        let (idleStatus, idleResponses) = try await cluster.call([["id": "idle", "value": ["text": "alone"]]])
        #expect(burstStatus == 0 && idleStatus == 0)
        #expect(await worker.stop() == 0)  // REALTIME publishes the rest while draining
        var runs: [String: [[String: Any]]] = [:]
        for event in try await cluster.lineageEvents() {
            runs[event["run_id"] as? String ?? "", default: []].append(event)
        }
        let answered = (burstResponses + idleResponses).compactMap {
            ($0["value"] as? [String: Any])?["run_id"] as? String
        }
        #expect(answered.count == 401 && Set(answered) == Set(runs.keys))
        for (runID, events) in runs {
            #expect(events.compactMap { $0["seq"] as? Int } == Array(0..<9), "run \(runID)")
            #expect(
                events.first?["type"] as? String == "run_started" && events.last?["type"] as? String == "run_completed")
            #expect(Set(events.compactMap { $0["partition"] as? Int }).count == 1)
            #expect(Set(events.compactMap { $0["key"] as? String }) == [runID])
        }
        await cluster.stop()
    }

    /// A run whose record would exceed the producer's `message.max.bytes` is split over several records; the
    /// response still waits for all of them, and they carry the run complete and in order.
    @Test func aRunTooLargeForOneRecordIsSplitAndStillComplete() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(["--capture", "BATCH", "--kafka", "message.max.bytes=2000"])
        let specs: [[String: Any]] = (0..<10).map { ["id": "s\($0)", "value": ["text": "one two three \($0)"]] }
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0)
        #expect(await worker.stop() == 0)
        let records = try await cluster.read(cluster.lineage)
        let events = try await cluster.lineageEvents()
        for response in responses {
            let value = try #require(response["value"] as? [String: Any])
            #expect(value["status"] as? String == "ok", "\(value)")
            let runID = try #require(value["run_id"] as? String)
            let runRecords = records.filter { ($0["value"] as? [String: Any])?["run_id"] as? String == runID }
            #expect(runRecords.count > 1 && runRecords.allSatisfy { ($0["size"] as? Int ?? .max) <= 2000 })
            let runEvents = events.filter { $0["run_id"] as? String == runID }
            #expect(runEvents.compactMap { $0["seq"] as? Int } == Array(0..<9))
            // Produced (create time) no later than the response: the response waited for every record.
            let lastRecord = runRecords.compactMap { $0["timestamp"] as? Int }.max() ?? .max
            #expect(lastRecord <= response["timestamp"] as? Int ?? 0)
        }
        await cluster.stop()
    }

    @Test func memoryOnlyPublishesNoLineage() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(["--capture", #"{"mode": "REALTIME", "runs": "off"}"#])
        let (status, responses) = try await cluster.call((0..<20).map { ["id": "m\($0)", "value": ["text": "a b"]] })
        #expect(status == 0)
        for response in responses {
            let value = try #require(response["value"] as? [String: Any])
            #expect(value["run_id"] is NSNull)
            #expect(value["capture"] as? String == "MEMORY")
        }
        #expect(await worker.stop() == 0)
        #expect(try await cluster.read(cluster.lineage).isEmpty)
        await cluster.stop()
    }

    /// `sample_rate`: about that fraction of runs is tracked (binomial bounds), each answering with its run id and
    /// its whole run on the lineage topic; the others answer as memory-only runs, and publish nothing.
    @Test func aSampledCaptureTracksAboutItsRateOfRuns() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(["--capture", #"{"mode": "REALTIME", "sample_rate": 0.25}"#])
        let (status, responses) = try await cluster.call((0..<400).map { ["id": "s\($0)", "value": ["text": "a b"]] })
        #expect(status == 0)
        #expect(responses.count == 400)
        var tracked: Set<String> = []
        for response in responses {
            let value = try #require(response["value"] as? [String: Any])
            #expect(value["status"] as? String == "ok")
            if let runID = value["run_id"] as? String {
                tracked.insert(runID)
                #expect(value["capture"] as? String == "REALTIME")
            } else {
                #expect(value["run_id"] is NSNull)
                #expect(value["capture"] as? String == "MEMORY")
            }
        }
        // Binomial(400, 0.25): mean 100, standard deviation 8.7; five deviations either side fail once in 2 million.
        #expect((57...143).contains(tracked.count), "\(tracked.count) runs tracked of 400")
        #expect(await worker.stop() == 0)
        let records = try await cluster.read(cluster.lineage)
        let published = Set(records.compactMap { ($0["value"] as? [String: Any])?["run_id"] as? String })
        #expect(published == tracked)
        await cluster.stop()
    }

    /// `runs: errors` in BATCH: exactly the failed runs are on the lineage topic, whole and ending with `run_failed`,
    /// and answer with their run ids; the runs that succeed answer with `run_id` null and publish nothing.
    @Test func anErrorsOnlyCapturePublishesExactlyTheFailedRuns() async throws {
        let cluster = try await ServingCluster.start(pipeline: "digits")
        let worker = try await cluster.startWorker(["--capture", #"{"mode": "BATCH", "runs": "errors"}"#])
        // Every third image has a pixel out of range: `validate` fails the run with invalid_input.
        let specs: [[String: Any]] = (0..<90).map { index in
            let pixels = (0..<64).map { pixel in index % 3 == 0 && pixel == 7 ? 99 : (index + pixel) % 17 }
            return ["id": "e\(index)", "value": ["pixels": pixels]]
        }
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0)
        #expect(responses.count == specs.count)
        var failed: Set<String> = []
        for response in responses {
            let value = try #require(response["value"] as? [String: Any])
            let index = try #require((response["id"] as? String).flatMap { Int($0.dropFirst()) })
            #expect(value["capture"] as? String == "BATCH")
            if index % 3 == 0 {
                #expect(value["status"] as? String == "error")
                #expect((value["error"] as? [String: Any])?["code"] as? String == "invalid_input", "\(value)")
                failed.insert(try #require(value["run_id"] as? String))
            } else {
                #expect(value["status"] as? String == "ok", "\(value)")
                #expect(value["run_id"] is NSNull)
            }
        }
        #expect(failed.count == 30)
        #expect(await worker.stop() == 0)
        let records = try await cluster.read(cluster.lineage)
        var lastEvents: [String: String] = [:]
        for record in records {
            let value = try #require(record["value"] as? [String: Any])
            let runID = try #require(value["run_id"] as? String)
            let events = try #require(value["events"] as? [[String: Any]])
            lastEvents[runID] = events.last?["type"] as? String
        }
        #expect(Set(lastEvents.keys) == failed)
        #expect(lastEvents.values.allSatisfy { $0 == "run_failed" }, "\(lastEvents)")
        await cluster.stop()
    }

    /// `digits` under load: 400 requests at once, `predict` batched across concurrent runs. Every request gets its own
    /// image's answer, and the lineage records each run's step run of `predict` with its batch's size, some above 1.
    @Test func batchedDigitsAnswersEveryRequestUnderLoad() async throws {
        let samples = try digitsSamples()
        let cluster = try await ServingCluster.start(pipeline: "digits")
        let worker = try await cluster.startWorker(["--capture", "REALTIME"])
        let specs: [[String: Any]] = (0..<400).map { index in
            ["id": "b\(index)", "value": ["pixels": samples[index % samples.count]["pixels"]!]]
        }
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0 && responses.count == specs.count)
        for response in responses {
            let index = try #require((response["id"] as? String).flatMap { Int($0.dropFirst()) })
            let value = try #require(response["value"] as? [String: Any])
            let output = try #require(value["output"] as? [String: Any], "\(value)")
            let probabilities = try #require(output["probabilities"] as? [Double])
            let expected = try #require(samples[index % samples.count]["probabilities"] as? [Double])
            #expect(zip(probabilities, expected).allSatisfy { abs($0 - $1) < 1e-9 }, "request \(index)")
        }
        #expect(await worker.stop() == 0)
        var batchSizes: [Int] = []
        for record in try await cluster.read(cluster.lineage) {
            let events = try #require((record["value"] as? [String: Any])?["events"] as? [[String: Any]])
            for event in events
            where event["type"] as? String == "metadata" && event["step_run"] as? String == "predict#1" {
                if let size = (event["values"] as? [String: Any])?["batch_size"] as? Int { batchSizes.append(size) }
            }
        }
        #expect(batchSizes.count == specs.count)
        #expect(batchSizes.allSatisfy { (1...64).contains($0) } && batchSizes.contains { $0 > 1 }, "\(batchSizes)")
        await cluster.stop()
    }

    /// `sluice-reply-partition`: each response goes to the partition its request names, whatever its key; one that
    /// names a partition the topic does not have is answered `internal` on the responses topic, and one that is not a
    /// number `invalid_input`.
    @Test func responsesGoToTheReplyPartitionTheRequestNames() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker()
        var specs: [[String: Any]] = (0..<12).map { index in
            [
                "id": "p\(index)", "value": ["text": "a b"], "key": "key-\(index)",
                "headers": ["sluice-reply-partition": String(index % 4)],
            ]
        }
        specs.append(["id": "missing", "value": ["text": "a b"], "headers": ["sluice-reply-partition": "99"]])
        specs.append(["id": "malformed", "value": ["text": "a b"], "headers": ["sluice-reply-partition": "two"]])
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0)
        #expect(responses.count == specs.count)
        for response in responses {
            let id = try #require(response["id"] as? String)
            let value = try #require(response["value"] as? [String: Any])
            let error = value["error"] as? [String: Any]
            switch id {
            case "missing":
                #expect(error?["code"] as? String == "internal", "\(value)")
                #expect((error?["message"] as? String)?.contains("partition 99") == true, "\(value)")
            case "malformed":
                #expect(error?["code"] as? String == "invalid_input", "\(value)")
            default:
                #expect(value["status"] as? String == "ok", "\(value)")
                #expect(response["partition"] as? Int == Int(id.dropFirst())! % 4, "\(id)")
            }
        }
        #expect(await worker.stop() == 0)
        await cluster.stop()
    }

    /// `sluice call` against a stand-in worker that answers every request twice: one line per input, in input
    /// order, each its own response.
    @Test func sluiceCallPrintsOneResponsePerInputWhenAWorkerAnswersTwice() async throws {
        let cluster = try await ServingCluster.start()
        let echo = try ChildProcess(
            "/usr/bin/env", ["python3", pythonScript("echo_twice.py"), cluster.bootstrap, cluster.requests, "5"])
        let inputs = (0..<5).map { #"{"n": \#($0)}"# }
        let call = try ChildProcess(
            sluiceExecutable,
            [
                "call", "--brokers", cluster.bootstrap, "--pipeline", cluster.pipeline, "--timeout", "60",
                "--kafka", "fetch.wait.max.ms=10",
            ], input: inputs.joined(separator: "\n") + "\n")
        let lines = try await call.readRest().split(separator: "\n")
        #expect(await call.wait(timeout: .seconds(90)) == 0, "\(call.standardError)")
        #expect(await echo.wait(timeout: .seconds(60)) == 0, "\(echo.standardError)")
        #expect(lines.count == 5, "\(lines)")
        for (index, line) in lines.enumerated() {
            let response = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect((response["output"] as? [String: Any])?["n"] as? Int == index, "\(line)")
        }
        await cluster.stop()
    }

    /// `sluice bench` against a worker: it waits for its consumer's assignment and for the last answer (not a fixed
    /// poll), and reports every request answered once.
    @Test func sluiceBenchReportsEveryRequestAnsweredOnce() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try await cluster.startWorker(["--capture", "MEMORY"])
        let bench = try ChildProcess(
            sluiceExecutable,
            [
                "bench", "--brokers", cluster.bootstrap, "--pipeline", cluster.pipeline, "--requests", "2000",
                "--window", "64", "--seconds", "60", "--timeout", "60", "--kafka", "fetch.wait.max.ms=10",
            ])
        let output = try await bench.readRest()
        #expect(await bench.wait(timeout: .seconds(120)) == 0, "\(bench.standardError)")
        let line = try #require(output.split(separator: "\n").last.map(String.init))
        let report = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(report["sent"] as? Int == 2000, "\(line)")
        #expect(report["answered"] as? Int == 2000, "\(line)")
        #expect(report["missing"] as? Int == 0 && report["duplicates"] as? Int == 0, "\(line)")
        #expect(await worker.stop() == 0)
        await cluster.stop()
    }

    /// `digits` counts its predictions with swift-metrics; they are on the worker's `/metrics` beside its own series.
    @Test func metricsCountRequestsStepsLagAndAStepsOwnCounter() async throws {
        let samples = try digitsSamples()
        let cluster = try await ServingCluster.start(pipeline: "digits")
        let worker = try await cluster.startWorker(["--capture", "REALTIME"])
        let specs: [[String: Any]] = samples.enumerated().map {
            ["id": "d\($0.offset)", "value": ["pixels": $0.element["pixels"]!]]
        }
        let (status, responses) = try await cluster.call(specs)
        #expect(status == 0 && responses.count == samples.count)
        try await worker.waitUntilAnswered(samples.count)
        let metrics = try #require(try await worker.metrics())
        let labels = #"pipeline="digits",capture="REALTIME""#
        #expect(
            hasSample(metrics, #"sluice_requests_total{\#(labels),status="ok",code=""} \#(samples.count)"#),
            "\(metrics)")
        #expect(hasSample(metrics, #"sluice_request_duration_seconds_count{\#(labels)} \#(samples.count)"#))
        for step in ["validate", "normalize", "predict", "explain"] {
            #expect(
                hasSample(
                    metrics,
                    #"sluice_step_duration_seconds_count{pipeline="digits",step="\#(step)",status="completed"} \#(samples.count)"#
                ),
                "\(step)")
        }
        // The step's own counter: one prediction per sample, over the digits.
        let predictions = metrics.matches(of: /digits_predictions_total\{digit="\d"\} (\d+)/).map { Int($0.1) ?? 0 }
        #expect(predictions.reduce(0, +) == samples.count, "\(metrics)")
        // Every request was taken: no lag on any partition that has a position.
        let lags = metrics.matches(
            of: /sluice_consumer_lag_records\{pipeline="digits",topic="digits.requests",partition="\d"\} (\S+)/)
        #expect(!lags.isEmpty && lags.allSatisfy { Double($0.1) == 0 }, "\(metrics)")
        #expect(await worker.stop() == 0)
        await cluster.stop()
    }

    /// `--http [::1]:0`: the status server listens on IPv6 and answers many clients at once, one of them stalled
    /// half-way through its request.
    @Test func theStatusServerListensOnIPv6AndAnswersManyConnectionsAtOnce() async throws {
        let cluster = try await ServingCluster.start()
        let worker = try ChildProcess(
            sluiceExecutable,
            ["worker", "--brokers", cluster.bootstrap, "--pipeline", "text-stats", "--http", "[::1]:0"])
        var port: Int?
        for _ in 0..<300 where port == nil {
            port = worker.standardError.firstMatch(of: /health and metrics on .* port (\d+)/).flatMap { Int($0.1) }
            if port == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        let listening = try #require(port, "\(worker.standardError)")
        let clients = try ChildProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import concurrent.futures, socket, sys, urllib.request
                port = int(sys.argv[1])
                idle = [socket.create_connection(("::1", port)) for _ in range(20)]
                idle[0].send(b"GET /health HTTP/1.1\\r\\n")
                def get(_):
                    return urllib.request.urlopen(f"http://[::1]:{port}/health", timeout=5).status
                with concurrent.futures.ThreadPoolExecutor(16) as pool:
                    print(sum(status == 200 for status in pool.map(get, range(64))))
                """,
                String(listening),
            ])
        let answered = try await clients.readRest()
        #expect(await clients.wait(timeout: .seconds(60)) == 0, "\(clients.standardError)")
        #expect(answered.trimmingCharacters(in: .whitespacesAndNewlines) == "64", "\(answered)")
        worker.signal(SIGTERM)
        #expect(await worker.wait() == 0, "\(worker.standardError.suffix(2000))")
        await cluster.stop()
    }

    @Test func aMalformedHTTPAddressIsAUsageErrorNamingIt() async throws {
        let process = try ChildProcess(
            sluiceExecutable, ["worker", "--brokers", "127.0.0.1:1", "--pipeline", "text-stats", "--http", "::1:8080"])
        #expect(await process.wait() == 64, "\(process.standardError)")
        #expect(process.standardError.contains("[::1]:8080"), "\(process.standardError)")
    }

    @Test func anUnreachableClusterIsAStartUpErrorNamingItAndLogsAreJSONLines() async throws {
        // Nothing listens on port 1 of the loopback: the listing of topics times out (10 s).
        let process = try ChildProcess(
            sluiceExecutable,
            ["worker", "--brokers", "127.0.0.1:1", "--pipeline", "text-stats", "--log-format", "json"])
        #expect(await process.wait() == 69, "unavailable, not a usage error: \(process.standardError)")
        #expect(process.standardError.contains("127.0.0.1:1 does not answer"), "\(process.standardError)")
        #expect(!process.standardError.contains("USAGE"), "\(process.standardError)")
        // Every log line before the error is one JSON object with the fixed members.
        let logLines = process.standardError.split(separator: "\n").filter { $0.hasPrefix("{") }
        let first = try #require(
            logLines.first.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] },
            "\(process.standardError)")
        #expect(first["logger"] as? String == "sluice.worker" && first["level"] as? String == "info", "\(first)")
        #expect((first["message"] as? String)?.contains("capture") == true, "\(first)")
        let timestamp = try #require(first["ts"] as? String)
        #expect(timestamp.count == 27 && timestamp.hasSuffix("Z") && timestamp.contains("T"), "\(timestamp)")
    }

    @Test func aBadLogLevelInTheEnvironmentIsAUsageErrorNamingIt() async throws {
        let process = try ChildProcess(
            sluiceExecutable, ["worker", "--brokers", "127.0.0.1:1", "--pipeline", "text-stats"],
            environment: ["SLUICE_LOG_LEVEL": "loud"])
        #expect(await process.wait() == 64, "\(process.standardError)")
        #expect(process.standardError.contains("SLUICE_LOG_LEVEL='loud'"), "\(process.standardError)")
    }

    @Test func missingTopicsAreAStartUpErrorNamingThem() async throws {
        let broker = try await BrokerProcess.start(["--topic", "text-stats.requests:2"])
        let process = try ChildProcess(
            sluiceExecutable, ["worker", "--brokers", broker.bootstrapServers, "--pipeline", "text-stats"])
        #expect(await process.wait() == 69, "unavailable, not a usage error: \(process.standardError)")
        #expect(!process.standardError.contains("USAGE"), "\(process.standardError)")
        #expect(process.standardError.contains("text-stats.responses"), "\(process.standardError)")
        #expect(process.standardError.contains("--create-topics"))
        _ = await broker.stop()
    }
}

/// Consumer-group behaviour under failure: workers joining, killed hard, stopped under load.
@Suite("sluice worker fleets: rebalances, kill -9, SIGTERM", .serialized)
struct WorkerFleetTests {
    /// Every id answered at least once, and every response right; duplicates (a redelivery) keep their request id.
    private func checkAnswered(_ responses: [[String: Any]], ids: Set<String>) throws {
        let answered = Set(responses.compactMap { $0["id"] as? String })
        #expect(answered == ids, "missing: \(ids.subtracting(answered).sorted().prefix(10))")
        for response in responses {
            let value = try #require(response["value"] as? [String: Any])
            #expect(value["status"] as? String == "ok", "\(value)")
            #expect(value["request_id"] as? String == response["id"] as? String)
        }
    }

    @Test func workersInAGroupShareThePartitionsAndAThirdJoiningLosesNothing() async throws {
        let cluster = try await ServingCluster.start(partitions: 6)
        let first = try await cluster.startWorker()
        let second = try await cluster.startWorker()
        try await first.waitUntil { $0.assignedPartitions > 0 && $0.assignedPartitions < 6 }
        try await second.waitUntil { $0.assignedPartitions > 0 }
        let ids = (0..<600).map { "g\($0)" }
        async let load = cluster.call(ids.map { ["id": $0, "value": ["text": "x y \($0)"], "key": $0] }, timeout: 90)
        try await Task.sleep(for: .milliseconds(300))
        let third = try await cluster.startWorker()
        let (status, responses) = try await load
        #expect(status == 0)
        try checkAnswered(responses, ids: Set(ids))
        try await third.waitUntil { $0.assignedPartitions > 0 }
        // Once the cooperative rebalance settles, the three own the six partitions between them.
        var owned: [Int] = []
        let deadline = ContinuousClock.now + .seconds(30)
        repeat {
            owned = try await [first.health(), second.health(), third.health()].map { $0?.assignedPartitions ?? 0 }
            if owned.reduce(0, +) == 6 { break }
            try await Task.sleep(for: .milliseconds(200))
        } while ContinuousClock.now < deadline
        #expect(owned.reduce(0, +) == 6 && owned.allSatisfy { $0 > 0 }, "\(owned)")
        for worker in [first, second, third] { #expect(await worker.stop() == 0) }
        await cluster.stop()
    }

    /// With the broker frozen, requests in flight cannot finish: after SIGTERM the worker drains, `/health` answers
    /// 503 `stopping`, and a second SIGTERM ends it at once with status 2.
    @Test func aStoppingWorkerIsUnhealthyAndASecondSignalExitsWithStatus2() async throws {
        let cluster = try await ServingCluster.start()
        // Two slots and many requests: some are still waiting when the broker freezes. A session longer than the
        // test keeps the frozen coordinator from expiring it.
        let worker = try await cluster.startWorker([
            "--capture", "BATCH", "--concurrency", "2", "--kafka", "session.timeout.ms=60000",
        ])
        try await cluster.produce((0..<20000).map { #"{"text": "frozen \#($0)"}"# }, to: cluster.requests)
        // Frozen in the middle of the stream with requests in flight: frozen right after the first answer, a
        // clean-clone CI run once found nothing in flight for a minute.
        try await worker.waitUntilAnswered(200)
        try await worker.waitUntil { $0.inFlight > 0 }
        #expect(try await worker.answered() ?? 0 < 20000, "answered everything before the freeze")
        cluster.broker.process.signal(SIGSTOP)
        try await worker.waitUntil { $0.inFlight > 0 }
        let serving = try await worker.httpStatus("/health")
        #expect(serving.status == 200 && serving.body.contains(#""status":"serving""#), "\(serving)")
        let ready = try await worker.httpStatus("/ready")
        #expect(ready.status == 200 && ready.body.contains(#""joined_group":true"#), "\(ready)")
        worker.process.signal(SIGTERM)
        var stopping = (status: 0, body: "")
        let deadline = ContinuousClock.now + .seconds(10)
        repeat {
            stopping = try await worker.httpStatus("/health")
            if stopping.status == 503 { break }
            try await Task.sleep(for: .milliseconds(100))
        } while ContinuousClock.now < deadline
        #expect(stopping.status == 503 && stopping.body.contains(#""status":"stopping""#), "\(stopping)")
        #expect(try await worker.httpStatus("/ready").status == 503, "a stopping worker is not ready")
        #expect(worker.process.isRunning, "it waits for the frozen broker's acknowledgements")
        worker.process.signal(SIGTERM)
        #expect(await worker.process.wait(timeout: .seconds(10)) == 2)
        cluster.broker.process.signal(SIGCONT)
        await cluster.stop()
    }

    @Test func killingAWorkerUnderLoadLosesNoRequest() async throws {
        let cluster = try await ServingCluster.start()
        let victim = try await cluster.startWorker(["--capture", "BATCH", "--concurrency", "8"])
        let survivor = try await cluster.startWorker(["--capture", "BATCH", "--concurrency", "8"])
        let ids = (0..<400).map { "k\($0)" }
        async let load = cluster.call(ids.map { ["id": $0, "value": ["text": "p q \($0)"], "key": $0] }, timeout: 120)
        try await victim.waitUntilAnswered(1)
        kill(victim.process.pid, SIGKILL)
        let (status, responses) = try await load
        #expect(status == 0)
        try checkAnswered(responses, ids: Set(ids))
        #expect(await survivor.stop() == 0)
        await cluster.stop()
    }

    @Test func sigtermUnderLoadDrainsAndCommits() async throws {
        let cluster = try await ServingCluster.start()
        // Four slots: the stop lands while most requests still wait.
        let draining = try await cluster.startWorker([
            "--capture", "REALTIME", "--name", "draining", "--concurrency", "4",
        ])
        let ids = (0..<3000).map { "t\($0)" }
        async let load = cluster.call(ids.map { ["id": $0, "value": ["text": "s t \($0)"], "key": $0] }, timeout: 120)
        try await draining.waitUntilAnswered(1)
        #expect(await draining.stop() == 0)
        // What it took was answered and committed before it exited: the group's committed offsets count exactly the
        // runs it served (offsets start at 0 and are committed in order).
        let committed = try await cluster.committedOffsets(group: "sluice.text-stats", topic: cluster.requests)
        // What it did not take is served by the next worker, from the committed offsets: nothing twice.
        let next = try await cluster.startWorker(["--capture", "REALTIME", "--name", "next"])
        let (status, responses) = try await load
        #expect(status == 0)
        try checkAnswered(responses, ids: Set(ids))
        #expect(responses.count == ids.count, "served twice: \(responses.count - ids.count)")
        #expect(await next.stop() == 0)
        // Both stopped gracefully, so REALTIME's background lineage was flushed first: every answered run is complete.
        let completed = Set(
            try await cluster.lineageEvents().compactMap { event -> String? in
                event["type"] as? String == "run_completed" ? event["run_id"] as? String : nil
            })
        let answered = Set(responses.compactMap { ($0["value"] as? [String: Any])?["run_id"] as? String })
        #expect(answered.count == ids.count && answered.isSubset(of: completed))
        let servedByDraining = try await cluster.lineageEvents().filter { event in
            event["type"] as? String == "run_started" && event["worker"] as? String == "draining"
        }
        #expect(servedByDraining.count > 0 && servedByDraining.count < ids.count)
        #expect(committed.values.reduce(0, +) == servedByDraining.count, "\(committed)")
        await cluster.stop()
    }
}

/// The digits example's samples (`Examples/digits/samples.json`): `pixels`, `label` and scikit-learn's `probabilities`.
func digitsSamples(filePath: String = #filePath) throws -> [[String: Any]] {
    let url = URL(fileURLWithPath: filePath).appendingPathComponent("../../../Examples/digits/samples.json")
        .standardized
    return try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [[String: Any]])
}
