import DequeModule

/// The requests of one partition in flight, in offset order: which offset may be stored when requests finish out
/// of order. An offset is stored only when it and every earlier request of the partition are done.
struct OffsetWatermark: Sendable {
    private var pending: Deque<(offset: Int64, done: Bool)> = []

    /// Requests taken and not yet past the watermark.
    var count: Int { pending.count }

    /// A request was taken. Concurrent readers may report a partition's offsets slightly out of order.
    mutating func begin(_ offset: Int64) {
        var index = pending.count
        while index > 0, pending[index - 1].offset > offset { index -= 1 }
        pending.insert((offset, false), at: index)
    }

    /// A request is done; returns the next offset to store (one past the last contiguous done request) if the
    /// watermark moved.
    mutating func finish(_ offset: Int64) -> Int64? {
        // Binary search: offsets are kept in increasing order.
        var low = 0
        var high = pending.count
        while low < high {
            let middle = (low + high) / 2
            if pending[middle].offset < offset { low = middle + 1 } else { high = middle }
        }
        guard low < pending.count, pending[low].offset == offset else { return nil }
        pending[low].done = true
        var next: Int64?
        while let first = pending.first, first.done {
            next = first.offset + 1
            pending.removeFirst()
        }
        return next
    }
}
