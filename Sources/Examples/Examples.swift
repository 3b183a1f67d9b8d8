// The Examples module: the `text-stats` and `digits` pipelines used by `demo`, the tests and `bench` (DESIGN.md).
// Not built yet: issue 5 fills it.
