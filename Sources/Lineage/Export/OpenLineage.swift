import Pipelines

/// How stored runs become OpenLineage events (docs/openlineage.md): names and where the Kafka topics are.
public struct OpenLineageSettings: Sendable {
    /// The jobs' namespace (a pipeline is a job of it; a step `<pipeline>.<step>`), and the artifacts' datasets'.
    public var namespace = "sluice"
    /// The Kafka cluster's namespace as OpenLineage names it, `kafka://<bootstrap host>:<port>`; with it, each run
    /// reads its request topic and writes its responses and lineage topics (Kafka datasets).
    public var kafkaNamespace: String?
    /// The lineage topic the runs' events went through.
    public var lineageTopic = "sluice.lineage"
    /// What produced the events (OpenLineage's `producer`, a URI).
    public var producer: String

    public init(producer: String) {
        self.producer = producer
    }
}

/// OpenLineage 2 RunEvents (https://openlineage.io/spec/2-0-2/OpenLineage.json) for stored runs: a run is a run of
/// the job named after its pipeline, START then COMPLETE, FAIL or (for an `incomplete` run) ABORT; each step run is a
/// child run (the `parent` facet) of the job `<pipeline>.<step>`; artifacts are datasets named
/// `<pipeline>/<artifact that produced the value>` whose version (the `version` facet) is the value's SHA-256.
public enum OpenLineage {
    static let schemaURL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
    static let parentFacet = "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet"
    static let nominalTimeFacet =
        "https://openlineage.io/spec/facets/1-0-1/NominalTimeRunFacet.json#/$defs/NominalTimeRunFacet"
    static let errorFacet =
        "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"
    static let versionFacet =
        "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet"

    /// The run's events, each one JSON object, in the order they happened: the run's START, each step's START and
    /// end, the run's end (its end left out while the run has none, which a stored run always has).
    public static func events(of run: StoredRun, settings: OpenLineageSettings) -> [[UInt8]] {
        let runID = uuid(
            "\(run.runID)\u{0}\(run.attempt)\u{0}\(run.position.partition)\u{0}\(run.position.firstOffset)")
        let job = run.pipeline
        var kafkaInputs: [Dataset] = []
        var kafkaOutputs: [Dataset] = []
        if let kafka = settings.kafkaNamespace {
            kafkaInputs = [Dataset(namespace: kafka, name: "\(run.pipeline).requests", version: nil)]
            kafkaOutputs = [
                Dataset(namespace: kafka, name: "\(run.pipeline).responses", version: nil),
                Dataset(namespace: kafka, name: settings.lineageTopic, version: nil),
            ]
        }
        let input = run.input.map { dataset(run.pipeline, producer: "input", $0, settings) }
        let output = run.output.map { dataset(run.pipeline, producer: $0.producedBy ?? "output", $0, settings) }
        var events: [[UInt8]] = []
        events.append(
            event(
                "START", at: run.startedMicros ?? run.endedMicros ?? 0, runID: runID, job: job, settings: settings,
                inputs: kafkaInputs + (input.map { [$0] } ?? []), outputs: [],
                facets: { out in
                    nominalTime(run.startedMicros, nil, settings, into: &out)
                    sluiceRun(run, settings, into: &out)
                }))
        for step in run.steps {
            let stepID = uuid("\(runID)\u{0}\(step.stepRun)")
            let stepJob = "\(run.pipeline).\(step.step)"
            let parent = { (out: inout JSONWriter) in
                out.key("parent")
                out.object { out in
                    facetHeader(parentFacet, settings, into: &out)
                    out.key("run")
                    out.object { $0.field("runId", runID) }
                    out.key("job")
                    out.object { out in
                        out.field("namespace", settings.namespace)
                        out.field("name", job)
                    }
                }
            }
            let inputs = step.inputs.map { dataset(run.pipeline, producer: $0.producedBy ?? $0.id, $0, settings) }
            let outputs = step.output.map { [dataset(run.pipeline, producer: $0.id, $0, settings)] } ?? []
            events.append(
                event(
                    "START", at: step.startedMicros ?? run.startedMicros ?? 0, runID: stepID, job: stepJob,
                    settings: settings, inputs: inputs, outputs: [],
                    facets: { out in
                        parent(&out)
                        nominalTime(step.startedMicros, nil, settings, into: &out)
                    }))
            let type: String
            switch step.status {
            case .completed, .cached: type = "COMPLETE"
            case .failed: type = "FAIL"
            case .running, .retrying: type = "ABORT"
            }
            events.append(
                event(
                    type, at: step.endedMicros ?? run.endedMicros ?? step.startedMicros ?? 0, runID: stepID,
                    job: stepJob, settings: settings, inputs: inputs, outputs: type == "COMPLETE" ? outputs : [],
                    facets: { out in
                        parent(&out)
                        nominalTime(step.startedMicros, step.endedMicros, settings, into: &out)
                        if let error = step.error { errorMessage(error, settings, into: &out) }
                    }))
        }
        let end: String
        switch run.status {
        case .completed: end = "COMPLETE"
        case .failed: end = "FAIL"
        case .incomplete: end = "ABORT"
        }
        events.append(
            event(
                end, at: run.endedMicros ?? run.steps.compactMap(\.endedMicros).max() ?? run.startedMicros ?? 0,
                runID: runID, job: job, settings: settings, inputs: kafkaInputs + (input.map { [$0] } ?? []),
                outputs: end == "COMPLETE" ? kafkaOutputs + (output.map { [$0] } ?? []) : kafkaOutputs,
                facets: { out in
                    nominalTime(run.startedMicros, run.endedMicros, settings, into: &out)
                    if let error = run.error { errorMessage(error, settings, into: &out) }
                    sluiceRun(run, settings, into: &out)
                }))
        return events
    }

    private struct Dataset {
        var namespace: String
        var name: String
        /// The value's SHA-256, for an artifact.
        var version: String?
    }

    /// An artifact as a dataset: named after the artifact that produced its value, versioned by the value's hash.
    private static func dataset(
        _ pipeline: String, producer: String, _ artifact: StoredRun.Artifact, _ settings: OpenLineageSettings
    ) -> Dataset {
        Dataset(namespace: settings.namespace, name: "\(pipeline)/\(producer)", version: artifact.sha256)
    }

    private static func event(
        _ type: String, at micros: Int64, runID: String, job: String, settings: OpenLineageSettings,
        inputs: [Dataset], outputs: [Dataset], facets: (inout JSONWriter) -> Void
    ) -> [UInt8] {
        var out = JSONWriter(capacity: 1024)
        out.object { out in
            out.field("eventType", type)
            out.field("eventTime", Timestamps.rfc3339(micros: micros))
            out.field("producer", settings.producer)
            out.field("schemaURL", schemaURL)
            out.key("run")
            out.object { out in
                out.field("runId", runID)
                out.key("facets")
                out.object(facets)
            }
            out.key("job")
            out.object { out in
                out.field("namespace", settings.namespace)
                out.field("name", job)
            }
            for (name, datasets) in [("inputs", inputs), ("outputs", outputs)] {
                out.key(named: name)
                out.array { list in
                    for dataset in datasets {
                        list.object { out in
                            out.field("namespace", dataset.namespace)
                            out.field("name", dataset.name)
                            out.key("facets")
                            out.object { out in
                                guard let version = dataset.version else { return }
                                out.key("version")
                                out.object { out in
                                    facetHeader(versionFacet, settings, into: &out)
                                    out.field("datasetVersion", version)
                                }
                            }
                        }
                    }
                }
            }
        }
        return out.bytes
    }

    private static func facetHeader(_ schema: String, _ settings: OpenLineageSettings, into out: inout JSONWriter) {
        out.field("_producer", settings.producer)
        out.field("_schemaURL", schema)
    }

    private static func nominalTime(
        _ started: Int64?, _ ended: Int64?, _ settings: OpenLineageSettings, into out: inout JSONWriter
    ) {
        guard let started else { return }
        out.key("nominalTime")
        out.object { out in
            facetHeader(nominalTimeFacet, settings, into: &out)
            out.field("nominalStartTime", Timestamps.rfc3339(micros: started))
            if let ended { out.field("nominalEndTime", Timestamps.rfc3339(micros: ended)) }
        }
    }

    private static func errorMessage(_ error: ErrorDetail, _ settings: OpenLineageSettings, into out: inout JSONWriter)
    {
        out.key("errorMessage")
        out.object { out in
            facetHeader(errorFacet, settings, into: &out)
            out.field("message", "\(error.code): \(error.message)")
            out.field("programmingLanguage", "Swift")
        }
    }

    /// Sluice's own run facet: where to find the run in Sluice (its run id, delivery attempt and request id).
    private static func sluiceRun(_ run: StoredRun, _ settings: OpenLineageSettings, into out: inout JSONWriter) {
        out.key("sluice")
        out.object { out in
            facetHeader(sluiceRunFacet, settings, into: &out)
            out.field("runId", run.runID)
            out.field("attempt", run.attempt)
            out.field("requestId", run.requestID)
            out.field("capture", run.capture)
            out.field("traceId", run.span?.traceID)
        }
    }

    /// What Sluice's run facet is (docs/openlineage.md describes it).
    static let sluiceRunFacet = "urn:sluice:facet:SluiceRunFacet:1"

    /// A UUID (RFC 9562 version 8: made from a name) from the SHA-256 of `name`: the same run gets the same id in
    /// every export.
    static func uuid(_ name: String) -> String {
        var hex = Array(ContentHash.sha256(Array(name.utf8), digits: 32).utf8)
        // The version (8) in the 13th digit, the variant (binary 10) in the two high bits of the 17th.
        hex[12] = UInt8(ascii: "8")
        let variant = "89ab".utf8.map { $0 }
        hex[16] = variant[Int(hex[16] <= UInt8(ascii: "9") ? hex[16] - 48 : hex[16] - 87) & 3]
        let text = String(decoding: hex, as: UTF8.self)
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { range in
            String(text.dropFirst(range.lowerBound).prefix(range.count))
        }.joined(separator: "-")
    }
}
