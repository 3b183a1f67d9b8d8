import DequeModule
import Pipelines

/// A run closed by the fold, with its place in the partition: lines are written in (`terminalOffset`, `rank`)
/// order, and a restart skips what is at or below the last one written.
struct ClosedRun {
    var fold: RunFold
    /// Several runs can close at one event (a run and others made `incomplete` by it); `rank` orders them.
    var rank: Int
    var position: StorePosition { StorePosition(offset: fold.terminalOffset ?? fold.lastOffset, rank: rank) }
}

/// Where a line stands in its lineage partition: its terminal offset, then its rank among the lines closed at that
/// offset.
struct StorePosition: Comparable, Hashable, Sendable {
    var offset: Int64
    var rank: Int

    static func < (lhs: StorePosition, rhs: StorePosition) -> Bool {
        (lhs.offset, lhs.rank) < (rhs.offset, rhs.rank)
    }
}

/// The open runs of one lineage partition, folded event by event in offset order (a record's events in their order).
///
/// A deterministic function of the log from any offset at which no run was open: the committed offset
/// (``resumeOffset``) is always such an offset. A run is closed by its terminal event, by a later `run_started` of
/// the same run id (a redelivered request: the earlier attempt becomes `incomplete`), or when `incompleteAfter`
/// further events of the partition pass without one of its own (its worker died in REALTIME).
struct PartitionFold {
    let partition: Int32
    let incompleteAfter: Int
    private var open: [String: RunFold] = [:]
    /// Events seen (any record of the partition, readable or not): the clock of the `incomplete` rule.
    private var events = 0
    /// (run id, the event count at one of its events): the run whose latest entry this is expires `incompleteAfter`
    /// events later. Entries of runs that moved on or closed are skipped when they come up.
    private var expiries: Deque<(runID: String, at: Int)> = []
    private var lastEventAt: [String: Int] = [:]
    /// The open runs by first offset, in offset order; closed ones are skipped when they come up.
    private var openings: Deque<(offset: Int64, runID: String)> = []
    private var nextOffset: Int64?

    init(partition: Int32, incompleteAfter: Int) {
        self.partition = partition
        self.incompleteAfter = incompleteAfter
    }

    /// Runs open now.
    var openRuns: Int { open.count }

    /// The offset to commit: the first offset of the oldest open run, or the next offset when none is open. A
    /// consumer that starts there rebuilds every open run.
    var resumeOffset: Int64? {
        mutating get {
            while let first = openings.first, open[first.runID]?.firstOffset != first.offset {
                openings.removeFirst()
            }
            return openings.first?.offset ?? nextOffset
        }
    }

    /// Takes the record at `offset` with its events (none when it could not be read: it still counts for the
    /// `incomplete` rule, as one event). Returns the runs it closed, in the order their lines are written.
    ///
    /// The events of a record are of one run (the lineage format's rule): the run is taken out of the open runs once,
    /// folded with each event, and put back once if it is still open.
    mutating func take(_ record: [TrackingEvent<ArtifactRef>], at offset: Int64) -> [ClosedRun] {
        if let next = nextOffset, offset < next {
            // The consumer went back (a rewind, or a record from before a reassignment): fold again from here.
            self = PartitionFold(partition: partition, incompleteAfter: incompleteAfter)
        }
        nextOffset = offset + 1
        var closed: [ClosedRun] = []
        if record.isEmpty { events += 1 }
        var current: RunFold?
        for event in record {
            if let run = current, run.runID != event.runID {
                keepOpen(run)
                current = nil
            }
            events += 1
            if current == nil { current = open.removeValue(forKey: event.runID) }
            fold(event, at: offset, into: &current, closed: &closed)
        }
        if let current { keepOpen(current) }
        expire(at: offset, into: &closed)
        return closed
    }

    /// Folds `event` into `current`, its run's open fold if there is one; leaves there the fold still open after it,
    /// if any.
    private mutating func fold(
        _ event: borrowing TrackingEvent<ArtifactRef>, at offset: Int64, into current: inout RunFold?,
        closed: inout [ClosedRun]
    ) {
        var attempt = 1
        if let fold = current {
            let restarted: Bool
            if case .runStarted = event.body {
                // The same run_started twice is a record the producer sent again; another one is a new delivery.
                restarted = !(fold.sawStart && fold.startTimestamp == event.timestamp)
            } else {
                restarted = false
            }
            guard restarted || !fold.isRepeat(event) else { return }
            if !restarted {
                fold.add(event, offset: offset)
                current = finish(fold, into: &closed)
                return
            }
            fold.closeIncomplete(at: offset)
            attempt = fold.attempt + 1
            _ = finish(fold, into: &closed)
        }
        let fold = RunFold(first: event, offset: offset, attempt: attempt)
        openings.append((offset, event.runID))
        fold.add(event, offset: offset)
        current = finish(fold, into: &closed)
    }

    /// `fold` when it is still open, or `nil` once it is moved to `closed`.
    private mutating func finish(_ fold: RunFold, into closed: inout [ClosedRun]) -> RunFold? {
        guard fold.status != nil else { return fold }
        lastEventAt[fold.runID] = nil
        closed.append(ClosedRun(fold: fold, rank: closed.count))
        return nil
    }

    /// Puts `fold` back among the open runs, its last event now.
    private mutating func keepOpen(_ fold: RunFold) {
        open[fold.runID] = fold
        lastEventAt[fold.runID] = events
        expiries.append((fold.runID, events))
    }

    /// Closes the runs that saw none of their events in the last `incompleteAfter` events.
    private mutating func expire(at offset: Int64, into closed: inout [ClosedRun]) {
        while let first = expiries.first, events - first.at >= incompleteAfter {
            expiries.removeFirst()
            guard lastEventAt[first.runID] == first.at, let fold = open[first.runID] else { continue }
            fold.closeIncomplete(at: offset)
            open[first.runID] = nil
            lastEventAt[first.runID] = nil
            closed.append(ClosedRun(fold: fold, rank: closed.count))
        }
    }
}
