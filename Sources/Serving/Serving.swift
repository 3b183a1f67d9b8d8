// The Serving module: wire protocol v1, the worker, the Kafka tracker and the request-reply client (DESIGN.md).
// Not built yet: issue 5 fills it.
