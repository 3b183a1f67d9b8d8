/// How a stored run ended: the `status` of its line in the store (docs/store.md, "A run's line").
public enum RunStatus: String, Sendable, Hashable, CaseIterable {
    case completed
    case failed
    /// No terminal event: a later attempt of the same run began, or its partition moved on too far without it.
    case incomplete
}

/// Where a step run stands in a stored run: the `status` of a step in the run's line.
public enum StepRunStatus: String, Sendable, Hashable, CaseIterable {
    /// Started, no outcome yet.
    case running
    case completed
    /// Its output came from the step cache.
    case cached
    /// Failed, and another attempt follows.
    case retrying
    case failed
}
