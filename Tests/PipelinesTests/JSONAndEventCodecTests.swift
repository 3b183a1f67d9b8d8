import Pipelines
import Testing

@Suite("JSON, canonical artifacts, SHA-256 and the lineage event codec")
struct JSONAndEventCodecTests {
    @Test func sha256MatchesKnownVectors() {
        #expect(ContentHash.sha256([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(
            ContentHash.sha256(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            ContentHash.sha256(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(
            ContentHash.sha256([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))
                == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    struct Nested: Codable, Sendable {
        var zeta: Int
        var alpha: [Double]
        var name: String?
        var flags: [String: Bool]
    }

    @Test func eventTypesAreFoundByNameAsByRawValue() {
        for type in LineageEventType.allCases {
            #expect(LineageEventType(named: type.rawValue) == type)
            for other in [type.rawValue + "x", String(type.rawValue.dropLast()), type.rawValue.uppercased()] {
                #expect(LineageEventType(named: other) == nil, "\(other)")
            }
        }
        for name in ["", "step_xailed", "run_startex", "step_cachex", "log ", "metadata\u{0}", "é"] {
            #expect(LineageEventType(named: name) == nil, "\(name)")
        }
    }

    @Test func canonicalJSONSortsKeysAndIsStable() throws {
        let value = Nested(zeta: -3, alpha: [1.5, 2, 1e-7], name: "tab\there \"q\" é", flags: ["b": true, "a": false])
        let json = String(decoding: try CanonicalJSON.encode(value), as: UTF8.self)
        #expect(json == #"{"alpha":[1.5,2.0,1e-07],"flags":{"a":false,"b":true},"name":"tab\there \"q\" é","zeta":-3}"#)
        #expect(throws: EncodingError.self) { try CanonicalJSON.encode([Double.nan]) }
        #expect(throws: EncodingError.self) { try CanonicalJSON.encode(UInt64.max) }
        #expect(String(decoding: try CanonicalJSON.encode(Optional<Int>.none), as: UTF8.self) == "null")
    }

    @Test func parserReadsWhatTheWriterWrites() throws {
        let tree: JSONValue = [
            "s": "line\nbreak \u{1} \u{1F600}", "i": -9_223_372_036_854_775_807, "d": 0.25, "b": true, "n": nil,
            "a": [1, "two", [:], []], "o": ["nested": ["deep": 1]],
        ]
        let bytes = CanonicalJSON.bytes(of: tree)
        #expect(try JSONValue(parsing: bytes) == tree)
        #expect(
            try JSONValue(parsing: Array(#" {"a" : [ 1 , 2.5e3 , "\u00e9\ud83d\ude00\/" ] } "#.utf8)) == [
                "a": [1, 2500.0, "é😀/"]
            ])  // Integers are Int64 up to its bounds, doubles beyond them.
        let integers =
            "[9223372036854775807,-9223372036854775808,9223372036854775808,-9223372036854775809,-0,7,1e2,"
            + "0,10,999999999999999999,1000000000000000000,5.0]"
        let expected: JSONValue = [
            .int(.max), .int(.min), .double(0x1p63), .double(-0x1p63), 0, 7, 100.0, 0, 10,
            .int(999_999_999_999_999_999),
            .int(1_000_000_000_000_000_000), 5.0,
        ]
        #expect(try JSONValue(parsing: Array(integers.utf8)) == expected)
        try RawJSONObject.withObject(Array(#"{"n":\#(integers)}"#.utf8)) { object throws in
            #expect(try object.value("n") == expected)
        }
    }

    @Test(arguments: [
        "", " ", "{", "[1,]", "{\"a\":1,}", "01", "1.", "-", "tru", "nul", "\"open", "\"\\x\"", "\"\\ud800\"",
        "{\"a\" 1}", "[1] 2", "{1:2}", "1e999", "\"\u{1}\"", String(repeating: "[", count: 600),
    ])
    func parserRefusesMalformedJSON(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: Array(text.utf8)) }
        #expect(throws: JSONParseError.self) { try JSONValue.check(Array(text.utf8)) }
    }

    @Test(arguments: ["1", " \"text\" ", "null", "[1, {\"a\": [true, -2.5e3]}]", "{\"text\": \"a b\"}"])
    func theCheckTakesWhatTheParserTakes(text: String) throws {
        _ = try JSONValue(parsing: Array(text.utf8))
        try JSONValue.check(Array(text.utf8))
    }

    @Test func aRawObjectReadsWhatTheParserReads() throws {
        let text =
            #" { "s" : "a\"b\\c\u00e9\ud83d\ude00" , "n":-1.5e3,"o":{"x":[1,{"y":null}]},"e":[],"t":true,"s":"last"} "#
        let parsed = try JSONValue(parsing: Array(text.utf8))
        guard case .object(let members) = parsed else {
            Issue.record("not an object")
            return
        }
        try RawJSONObject.withObject(Array(text.utf8)) { object throws in
            #expect(object.keys == ["s", "n", "o", "e", "t", "s"])
            for key: StaticString in ["s", "n", "o", "e", "t"] { #expect(try object.value(key) == members["\(key)"]) }
            #expect(object.rawValue("o") == Array(#"{"x":[1,{"y":null}]}"#.utf8))
            #expect(object.rawValue("n") == Array("-1.5e3".utf8) && object.rawValue("t") == Array("true".utf8))
            #expect(object.rawValue("s") == Array(#""last""#.utf8) && object.rawValue("missing") == nil)
            #expect(try object.withObject("o") { try $0.value("x") } == [1, ["y": nil]])
            #expect(try object.withObjects("e") { $0.keys } == [])
            #expect(try object.withObject("missing") { _ in 1 } == nil)
            #expect(throws: JSONParseError.self) { try object.withObject("t") { _ in 1 } }
        }
    }

    /// A lookup starts after the member found last when an object's names are distinct, and reads the whole object
    /// when a name repeats, however the repeat is written: any order of lookups finds the same values.
    @Test func aRawObjectFindsMembersInAnyOrderAndTheLastOfARepeatedName() throws {
        let names: [StaticString] = [
            "seq", "type", "ts", "step", "step_run", "version", "step_attempt", "inputs", "duration_us", "output", "a",
            "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v",
        ]
        let distinct = "{" + names.enumerated().map { "\"\($1)\":\($0)" }.joined(separator: ",") + "}"
        try RawJSONObject.withObject(Array(distinct.utf8)) { object throws in
            for order in [Array(names.indices), names.indices.reversed(), names.indices.map { ($0 * 7) % names.count }]
            {
                for index in order { #expect(try object.value(names[index]) == .int(Int64(index))) }
                #expect(try object.value("absent") == nil && object.value("seq") == 0)
            }
        }
        for text in [
            #"{"b":1,"a":2,"c":3,"a":4}"#, #"{"a":2,"b":1,"c":3,"a":4}"#, #"{"a":2,"b":1,"c":3,"a":4}"#,
        ] {
            try RawJSONObject.withObject(Array(text.utf8)) { object throws in
                #expect(try object.value("b") == 1 && object.value("a") == 4 && object.value("c") == 3)
                #expect(try object.value("a") == 4 && object.value("b") == 1)
            }
        }
    }

    /// Names are compared as Swift compares strings: byte for byte when both are ASCII, by canonical equivalence
    /// otherwise (the Kelvin sign is a K; "é" precomposed is "e" and a combining accent).
    @Test func aRawObjectFindsNamesByCanonicalEquivalence() throws {
        try RawJSONObject.withObject(Array("{\"\u{212A}\": 1, \"e\u{301}\": 2, \"k\": 3}".utf8)) { object throws in
            #expect(try object.value("K") == 1)
            #expect(try object.value("\u{E9}") == 2)
            #expect(try object.value("k") == 3)
        }
        try RawJSONObject.withObject(Array(#"{"\u00e9": 1, "K": 2}"#.utf8)) { object throws in
            #expect(try object.value("e\u{301}") == 1)
            #expect(try object.value("\u{212A}") == 2)
            #expect(try object.value("k") == nil)
        }
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\":1,}", "01", "1.", "-", "tru", "nul", "\"open", "\"\\x\"", "\"\\ud800\"",
        "{\"a\" 1}", "{1:2}", "\"\u{1}\"", String(repeating: "[", count: 600),
    ])
    func aRawObjectRefusesWhatTheParserRefuses(member: String) {
        #expect(throws: JSONParseError.self) {
            try RawJSONObject.withObject(Array("{\"k\": \(member)}".utf8)) { _ in }
        }
        #expect(throws: JSONParseError.self) {
            try RawJSONObject.withObject([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D]) { _ in }
        }
        #expect(throws: JSONParseError.self) { try RawJSONObject.withObject(Array("{} 1".utf8)) { _ in } }
    }

    /// Strings are scanned eight bytes at a time: a quote, an escape, a control character, a non-ASCII character or a
    /// byte that is not UTF-8 at any position of a long string is seen, when the string is parsed and when it is skipped.
    @Test func everyPositionOfALongStringIsChecked() throws {
        for position in 0..<24 {
            let prefix = Array(repeating: UInt8(ascii: "a"), count: position)
            let suffix = Array(repeating: UInt8(ascii: "b"), count: 23 - position)
            func string(_ middle: [UInt8]) -> [UInt8] { [0x22] + prefix + middle + suffix + [0x22] }
            // Parsed (as the member's value) and skipped (inside a nested object the raw reader does not open).
            func parsed(_ middle: [UInt8]) throws -> JSONValue { try JSONValue(parsing: string(middle)) }
            func skipped(_ middle: [UInt8]) throws {
                try RawJSONObject.withObject(Array(#"{"o": {"k": "#.utf8) + string(middle) + Array("}}".utf8)) { _ in }
            }
            let plain = String(decoding: prefix + suffix, as: UTF8.self)
            #expect(
                try parsed(Array(#"\""#.utf8))
                    == .string(String(plain.prefix(position)) + "\"" + plain.dropFirst(position)))
            #expect(
                try parsed(Array("é".utf8)) == .string(String(plain.prefix(position)) + "é" + plain.dropFirst(position))
            )
            try skipped(Array(#"\\"#.utf8))
            try skipped(Array("é".utf8))
            for bad: [UInt8] in [[0x01], [0x1F], [0xFF], [0xC3], Array(#"\q"#.utf8)] {
                #expect(throws: JSONParseError.self, "byte \(bad) at \(position)") { try parsed(bad) }
                #expect(throws: JSONParseError.self, "byte \(bad) at \(position), skipped") { try skipped(bad) }
            }
        }
    }

    @Test func parserRefusesInvalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: [0x22, 0xFF, 0x22]) }
    }

    @Test func everyEventTypeRoundTrips() async throws {
        let calls = Counter()
        let flaky = Step("flaky", cache: true, retry: .attempts(2)) { (value: Int) in
            RunContext.current?.log("trying", level: .warning)
            RunContext.current?.addMetadata(["value": .int(Int64(value)), "ratio": 0.5])
            if calls.next() == 1 { throw Flaky(attempt: 1) }
            return value
        }
        let fail = Step("fail") { (_: Int) -> Int in throw Rejected() }
        let pipeline = Pipeline("all-types") { (value: Int) in
            let first = try await flaky(value)
            let again = try await flaky(value)
            return try await fail(first + again)
        }
        let tracker = RecordingTracker()
        _ = await PipelineRunner(tracker: tracker).run(
            pipeline, -1,
            options: RunOptions(capture: .batch, requestID: "r1", traceparent: "00-aa-bb-01", worker: "host-1:42"))
        let events = tracker.events
        guard case .runStarted(_, _, "00-aa-bb-01", nil, nil, "host-1:42")? = events.first?.body else {
            Issue.record("run_started does not carry the trace and the worker: \(String(describing: events.first))")
            return
        }
        #expect(Set(events.map(\.type)) == Set(LineageEventType.allCases).subtracting([.runCompleted]))
        // The whole run in one record, and each event in a record of its own.
        let record = LineageRecord.encode(events)
        #expect(try LineageRecord.decode(record) == events)
        let object = try JSONValue(parsing: record)
        #expect(object["v"] == 2 && object["run_id"]?.stringValue == events[0].runID)
        for event in events {
            #expect(try LineageRecord.decode(LineageRecord.encode([event])) == [event])
        }
        let completed = LineageEvent(
            seq: 0, timestamp: 1, runID: "r", pipeline: "p", requestID: nil, capture: "OFF", attempt: 1,
            body: .runCompleted(durationMicros: 5, output: nil))
        #expect(try LineageRecord.decode(LineageRecord.encode([completed])) == [completed])
    }

    /// A reader that keeps the configuration read last gives each record its own: one written like the last is the
    /// kept value, another of the same length is parsed.
    @Test func aKeptConfigurationIsUsedOnlyForTheSameBytes() throws {
        func started(_ configuration: JSONValue) -> LineageEvent {
            LineageEvent(
                seq: 0, timestamp: 1, runID: "r", pipeline: "p", requestID: nil, capture: "REALTIME", attempt: 1,
                body: .runStarted(
                    configuration: configuration, input: nil, traceparent: nil, traceparentError: nil, span: nil,
                    worker: nil))
        }
        let configurations = RepeatedJSON()
        for configuration: JSONValue in [["mode": "BATCH"], ["mode": "BATCH"], ["mode": "OFF12"], ["mode": "BATCH"]] {
            let decoded = try LineageRecord.decode(
                LineageRecord.encode([started(configuration)]), configurations: configurations)
            #expect(decoded == [started(configuration)])
        }
    }

    /// A tracker writes records straight from the pending events: the same bytes as from the events resolved first,
    /// with inline values, producers found by storage and by content, a value too large to inline and one that
    /// cannot be encoded.
    @Test func aRecordWrittenFromPendingEventsIsTheRecordOfTheResolvedEvents() async throws {
        let split = Step("split") { (text: String) in text.split(separator: " ").map(String.init) }
        let pad = Step("pad") { (words: [String]) in words.map { String(repeating: $0, count: 40) } }
        let ratio = Step("ratio") { (words: [String]) in Double(words.count) / 0 }
        let pipeline = Pipeline("pending") { (text: String) in
            let words = try await split(text)
            let rebuilt = words.map { String($0.utf8.map { Character(UnicodeScalar($0)) }) }
            _ = try await pad(rebuilt)
            return try await ratio(pad(words))
        }
        let pending = PendingTracker()
        var capture = CaptureConfiguration.batch
        capture.inlineLimit = 64
        _ = await PipelineRunner(tracker: pending).run(pipeline, "a bb ccc", options: RunOptions(capture: capture))
        let events = pending.events
        // Both passes resolve in `seq` order; the second finds each producer again (every value is produced once).
        let resolvedRecord = LineageRecord.encode(events.map { $0.resolve() })
        let pendingRecord = LineageRecord.encode(events)
        #expect(String(decoding: pendingRecord, as: UTF8.self) == String(decoding: resolvedRecord, as: UTF8.self))
        let decoded = try LineageRecord.decode(pendingRecord)
        #expect(
            decoded.contains { event in
                if case .stepCompleted(_, _, _, let output?) = event.body { output.error != nil } else { false }
            })
        #expect(
            decoded.contains { event in
                if case .stepCompleted(_, _, _, let output?) = event.body {
                    output.inlineJSON == nil && output.sha256 != nil
                } else {
                    false
                }
            })
    }

    static let countCompleted = LineageEvent(
        seq: 2, timestamp: 1_700_000_000_000_000, runID: "run-1", pipeline: "text-stats", requestID: "req-1",
        capture: "BATCH", attempt: 1,
        body: .stepCompleted(
            step: StepRunID(step: "count", id: "count#1", version: 1), attempt: 1, durationMicros: 12,
            output: ArtifactRef(
                id: "count#1/out", type: "Int", sha256: ContentHash.sha256(Array("4".utf8)), size: 1,
                inlineJSON: Array("4".utf8))))

    @Test func theWireFormIsDocumented() throws {
        var log = Self.countCompleted
        log.seq = 3
        log.timestamp += 5
        log.body = .log(stepRun: "count#1", level: .info, message: "counted")
        #expect(
            String(decoding: LineageRecord.encode([Self.countCompleted, log]), as: UTF8.self)
                == #"{"v":2,"run_id":"run-1","pipeline":"text-stats","request_id":"req-1","capture":"BATCH","attempt":1,"#
                + #""events":[{"seq":2,"type":"step_completed","ts":1700000000000000,"step":"count","#
                + #""step_run":"count#1","version":1,"step_attempt":1,"duration_us":12,"output":{"id":"count#1/out","#
                + #""type":"Int","sha256":"4b227777d4dd1fc61c6f884f48641d02b4d121d3fd328cb08b5531fcacdabf8a","size":1,"#
                + #""value":4}},{"seq":3,"type":"log","ts":1700000000000005,"step_run":"count#1","level":"info","#
                + #""message":"counted"}]}"#)
    }

    @Test func aVersion1RecordIsStillRead() throws {
        let v1 =
            #"{"v":1,"event_id":"run-1/1/2","seq":2,"type":"step_completed","ts":1700000000000000,"run_id":"run-1","#
            + #""pipeline":"text-stats","request_id":"req-1","capture":"BATCH","attempt":1,"step":"count","#
            + #""step_run":"count#1","version":1,"step_attempt":1,"duration_us":12,"output":{"id":"count#1/out","#
            + #""type":"Int","sha256":"4b227777d4dd1fc61c6f884f48641d02b4d121d3fd328cb08b5531fcacdabf8a","size":1,"#
            + #""value":4}}"#
        #expect(try LineageRecord.decode(Array(v1.utf8)) == [Self.countCompleted])
    }

    @Test(arguments: [
        (#"[]"#, "not a JSON object"),
        (#"{"v":3,"type":"log"}"#, "record version 3"),
        (#"{"v":2,"run_id":"r","pipeline":"p","capture":"BATCH","attempt":1,"events":[]}"#, "non-empty"),
        (#"{"v":2,"run_id":"r","pipeline":"p","capture":"BATCH","attempt":1}"#, "'events'"),
        (
            #"{"v":2,"run_id":"r","pipeline":"p","capture":"BATCH","attempt":1,"events":[{"seq":0,"ts":1,"type":"log","level":"info"}]}"#,
            "event field 'message'"
        ),
        (#"{"v":1,"type":"party","run_id":"r","pipeline":"p","capture":"BATCH","attempt":1}"#, "unknown type 'party'"),
        (
            #"{"v":1,"type":"log","seq":0,"ts":1,"run_id":"r","pipeline":"p","capture":"BATCH","attempt":1,"event_id":"r/1/0","level":"loud","message":"m"}"#,
            "unknown log level"
        ),
        (
            #"{"v":1,"type":"run_failed","seq":0,"ts":1,"run_id":"r","pipeline":"p","capture":"BATCH","attempt":1,"event_id":"r/1/0","duration_us":1}"#,
            "'error'"
        ),
        (
            #"{"v":1,"type":"run_completed","seq":"0","ts":1,"run_id":"r","pipeline":"p","capture":"BATCH","attempt":1,"event_id":"r/1/0","duration_us":1}"#,
            "'seq'"
        ),
        (
            #"{"v":1,"type":"run_completed","seq":0,"ts":1,"run_id":"r","pipeline":"p","capture":"BATCH","attempt":1,"event_id":"x","duration_us":1}"#,
            "event_id 'x'"
        ),
        (
            #"{"v":1,"type":"step_started","seq":0,"ts":1,"run_id":"r","pipeline":"p","capture":"BATCH","attempt":1,"event_id":"r/1/0","step":"s","step_run":"s#1","version":1,"step_attempt":1,"inputs":[{"id":1}]}"#,
            "'id'"
        ),
    ])
    func malformedEventsAreErrorsNamingTheField(json: String, words: String) {
        do {
            _ = try LineageRecord.decode(Array(json.utf8))
            Issue.record("accepted \(json)")
        } catch {
            #expect("\(error)".contains(words), "\(error) lacks \(words)")
        }
    }
}
