// The Pipelines module: typed steps, pipelines, the run context, artifacts, capture configuration, the lineage event
// model and the `Tracker` protocol (DESIGN.md, "Parts and flow"). It knows nothing about Kafka.
// Not built yet: issue 4 fills it.
