import Pipelines
import Testing

@Suite("Capture configuration: modes, knobs, precedence, errors")
struct CaptureResolutionTests {
    @Test func modesSetTheirKnobs() throws {
        #expect(CaptureConfiguration.batch.waitForTracking)
        #expect(!CaptureConfiguration.realtime.waitForTracking)
        #expect(CaptureConfiguration.realtime.caching && CaptureConfiguration.batch.caching)
        #expect(!CaptureConfiguration.off.metadata && CaptureConfiguration.off.logs == .off)
        #expect(!CaptureConfiguration.off.cachesSteps && !CaptureConfiguration.memoryOnly.cachesSteps)
        #expect(CaptureConfiguration.memoryOnly.isMemoryOnly && CaptureConfiguration.memoryOnly.label == "MEMORY")
        #expect(try CaptureConfiguration.parse("realtime", source: .code) == .realtime)
        #expect(try CaptureConfiguration.parse("OFF", source: .code) == .off)
        let memory = try CaptureConfiguration.parse(#"{"mode": "REALTIME", "runs": "off"}"#, source: .code)
        #expect(memory.isMemoryOnly)
        #expect(try CaptureConfiguration.parse("memory", source: .code) == .memoryOnly)
        #expect(try CaptureConfiguration.parse("{mode: REALTIME, runs: off}", source: .code).isMemoryOnly)
        #expect(try CaptureConfiguration.parse(#"{"mode": "BATCH", "caching": false}"#, source: .code).caching == false)
        let persisted = try CaptureConfiguration.parse("{mode: REALTIME, persistence: memory}", source: .code)
        #expect(persisted.isMemoryOnly)
        let flushing = try CaptureConfiguration.parse("{mode: REALTIME, flush_on_step_end: true}", source: .code)
        #expect(flushing == .realtime(flushOnStepEnd: true))
    }

    @Test func customSetsEachKnobOnItsOwn() throws {
        let custom = try CaptureConfiguration.parse(
            """
            mode: CUSTOM
            wait_for_tracking: false
            artifacts: false
            metadata: false
            logs: errors
            caching: false
            inline_limit: 128
            """, source: .runConfig)
        #expect(custom.mode == .custom && custom.label == "CUSTOM")
        #expect(!custom.waitForTracking && !custom.artifacts && !custom.metadata && !custom.caching)
        #expect(custom.logs == .errors && custom.inlineLimit == 128)
        #expect(custom.summary.hasPrefix("CUSTOM (runs=on, persistence=durable, wait_for_tracking=false"))
    }

    /// `runs: errors` in any case and from any source; recorded as the word, neither memory-only nor flushing steps.
    @Test func runsTakesErrorsForFailedRunsOnly() throws {
        let errors = try CaptureConfiguration.parse("{mode: BATCH, runs: errors}", source: .commandLine)
        #expect(errors.runs == .errors && errors.keepsFailedRunsOnly && !errors.isMemoryOnly)
        #expect(errors.label == "BATCH" && errors.waitForTracking)
        #expect(errors.summary.hasPrefix("BATCH (runs=errors, persistence=durable"))
        #expect(errors.knobsObject["runs"] == "errors")
        #expect(try CaptureConfiguration.parse(#"{"runs": "ERRORS"}"#, source: .code).runs == .errors)
        let fromYAML = try RunConfiguration(yaml: "capture:\n  mode: REALTIME\n  runs: errors").capture
        #expect(fromYAML?.runs == .errors && fromYAML?.mode == .realtime)
        let flushing = try CaptureConfiguration.parse(
            "{mode: REALTIME, runs: errors, flush_on_step_end: true}", source: .code)
        #expect(flushing.flushOnStepEnd && !flushing.flushesEachStep)
        // Memory persistence still wins: nothing is kept, failed or not.
        let memory = try CaptureConfiguration.parse("{runs: errors, persistence: memory}", source: .code)
        #expect(memory.isMemoryOnly && !memory.keepsFailedRunsOnly)
        #expect(try CaptureConfiguration.parse("{runs: yes}", source: .code).runs == .on)
        #expect(try CaptureConfiguration.parse("{runs: false}", source: .code).runs == .off)
    }

    @Test func aSampleRateIsAKnobOfEverySource() throws {
        let mapping = #"{"mode": "REALTIME", "sample_rate": 0.25}"#
        #expect(try CaptureConfiguration.parse(mapping, source: .commandLine).sampleRate == 0.25)
        #expect(try RunConfiguration(yaml: "capture:\n  mode: BATCH\n  sample_rate: 0.5").capture?.sampleRate == 0.5)
        let fromEnvironment = try ResolvedCapture.resolve(environment: ["SLUICE_CAPTURE_MODE": mapping])
        #expect(fromEnvironment.configuration.sampleRate == 0.25 && fromEnvironment.configuration.mode == .realtime)
        #expect(try CaptureConfiguration.parse("{sample_rate: 0}", source: .code).sampleRate == 0)
        #expect(try CaptureConfiguration.parse("{sample_rate: 1}", source: .code).sampleRate == 1)
        #expect(CaptureConfiguration.realtime.sampleRate == 1)
        #expect(
            CaptureConfiguration.realtime.knobs.last.map { $0.name == "sample_rate" && $0.value == .double(1) } == true)
        var code = CaptureConfiguration.batch
        code.sampleRate = 0.1
        #expect(try ResolvedCapture.resolve(code: code, environment: [:]).configuration.sampleRate == 0.1)
    }

    /// The choice is a function of the run id: the documented hash, the same in any process or language, taking about
    /// the rate's share of ids.
    @Test func aSampleRateTracksAboutItsShareOfRunIDs() {
        var sampled = CaptureConfiguration.realtime
        sampled.sampleRate = 0.3
        let ids = (0..<10_000).map { "0000" + String(UInt64($0) &* 0x9E37_79B9_7F4A_7C15, radix: 16) }
        let tracked = ids.filter { sampled.tracks(runID: $0) }
        // Binomial(10 000, 0.3): mean 3 000, standard deviation 46; six deviations either side.
        #expect((2_725...3_275).contains(tracked.count), "\(tracked.count)")
        sampled.sampleRate = 0
        #expect(!ids.contains { sampled.tracks(runID: $0) })
        sampled.sampleRate = 1
        #expect(ids.allSatisfy { sampled.tracks(runID: $0) })
        // The documented hash (docs/capture.md), as Python computes it for this id: 0.7441477542177966.
        #expect(CaptureConfiguration.sampleFraction(runID: "de667f317ab777f0f1ae317e776bd6f3") == 0x1.7d00ef3783ba8p-1)
    }

    @Test func precedenceIsCommandLineRunConfigCodeEnvironmentThenBatch() throws {
        let runConfig = try RunConfiguration(yaml: "capture: OFF")
        let environment = ["SLUICE_CAPTURE_MODE": "REALTIME", "SLUICE_SERVING_CAPTURE_DEFAULT": "CUSTOM"]
        func resolve(
            _ commandLine: String?, _ runConfig: RunConfiguration?, _ code: CaptureConfiguration?,
            _ environment: [String: String]
        ) throws -> (String, CaptureSource) {
            let resolved = try ResolvedCapture.resolve(
                commandLine: commandLine, runConfig: runConfig, code: code, environment: environment)
            return (resolved.configuration.label, resolved.source)
        }
        #expect(
            try resolve(#"{"mode":"REALTIME","runs":"off"}"#, runConfig, .batch, environment) == (
                "MEMORY", .commandLine
            ))
        #expect(try resolve(nil, runConfig, .batch, environment) == ("OFF", .runConfig))
        #expect(try resolve(nil, nil, .batch, environment) == ("BATCH", .code))
        #expect(try resolve(nil, nil, nil, environment) == ("REALTIME", .captureModeVariable))
        #expect(
            try resolve(nil, nil, nil, ["SLUICE_SERVING_CAPTURE_DEFAULT": "CUSTOM"])
                == ("CUSTOM", .servingDefaultVariable))
        #expect(try resolve(nil, nil, nil, [:]) == ("BATCH", .fallback))
        // A run-config file without `capture` and empty variables do not count as set.
        #expect(try resolve(nil, RunConfiguration(yaml: ""), nil, ["SLUICE_CAPTURE_MODE": " "]) == ("BATCH", .fallback))
    }

    @Test func runConfigAcceptsAStringOrAMapping() throws {
        #expect(try RunConfiguration(yaml: "capture: REALTIME").capture == .realtime)
        let mapping = try RunConfiguration(
            yaml: """
                capture:
                  mode: REALTIME
                  flush_on_step_end: false
                """)
        #expect(mapping.capture == .realtime(flushOnStepEnd: false))
    }

    /// Each bad value and the words its error must contain.
    static let malformed: [(String, [String])] = [
        ("FAST", ["'FAST'", "BATCH, REALTIME, OFF, CUSTOM"]),
        ("", ["neither a mode name nor a mapping"]),
        ("42", ["42", "neither a mode name nor a mapping"]),
        ("[BATCH]", ["neither a mode name nor a mapping"]),
        ("{mode: 3}", ["capture mode 3", "not a name"]),
        ("{mode: SLOW}", ["'SLOW'"]),
        ("{mode: REALTIME, runz: off}", ["'runz'", "is not one of mode, runs"]),
        ("{runs: maybe}", ["runs \"maybe\"", "on, off, errors", "true, false, yes, no"]),
        ("{runs: error}", ["runs \"error\""]),
        ("{runs: 1}", ["runs 1"]),
        ("{persistence: disk}", ["persistence \"disk\"", "durable, memory"]),
        ("{logs: some}", ["logs \"some\"", "all, errors, off"]),
        ("{metadata: []}", ["metadata []"]),
        ("{flush_on_step_end: yes please}", ["flush_on_step_end \"yes please\""]),
        ("{wait_for_tracking: null}", ["wait_for_tracking null"]),
        ("{inline_limit: -1}", ["inline_limit -1", "byte count"]),
        ("{inline_limit: 1.5}", ["inline_limit 1.5"]),
        ("{inline_limit: lots}", ["inline_limit \"lots\""]),
        ("{caching: {on: true}}", ["caching"]),
        ("{mode: REALTIME", ["does not parse"]),
        ("{1: BATCH}", ["key '1'"]),
        ("{runs: 2024-01-01}", ["runs \"2024-01-01\""]),
        ("{sample_rate: 1.5}", ["sample_rate 1.5", "from 0 to 1"]),
        ("{sample_rate: -0.1}", ["sample_rate -0.1"]),
        ("{sample_rate: 2}", ["sample_rate 2"]),
        ("{sample_rate: half}", ["sample_rate \"half\""]),
        ("{sample_rate: .nan}", ["sample_rate"]),
        ("{sample_rate: null}", ["sample_rate null"]),
    ]

    @Test(arguments: malformed)
    func malformedValuesAreErrorsNamingThem(text: String, words: [String]) throws {
        for source in [CaptureSource.commandLine, .captureModeVariable] {
            let error = try #require(throws: CaptureConfigurationError.self) {
                try CaptureConfiguration.parse(text, source: source)
            }
            for word in words { #expect(error.message.contains(word), "\(error.message) lacks \(word)") }
            #expect(error.message.contains(source.rawValue), "\(error.message) does not name its source")
        }
    }

    @Test func aBadValueInAWeakerSourceIsStillAnError() throws {
        let error = try #require(throws: CaptureConfigurationError.self) {
            try ResolvedCapture.resolve(
                commandLine: "BATCH", environment: ["SLUICE_SERVING_CAPTURE_DEFAULT": "REALTIM"])
        }
        #expect(error.message.contains("'REALTIM'") && error.message.contains("SLUICE_SERVING_CAPTURE_DEFAULT"))
    }

    @Test func badRunConfigFilesAreErrorsNamingTheProblem() throws {
        let cases: [(String, String)] = [
            ("captur: BATCH", "unknown key 'captur'"),
            ("- capture", "must be a mapping"),
            ("capture: [", "does not parse"),
            ("capture: {logs: verbose}", "logs \"verbose\" from run-config YAML"),
        ]
        for (yaml, words) in cases {
            let error = try #require(throws: CaptureConfigurationError.self) { try RunConfiguration(yaml: yaml) }
            #expect(error.message.contains(words), "\(error.message) lacks \(words)")
        }
    }
}
