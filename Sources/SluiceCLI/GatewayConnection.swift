import DequeModule
import NIOHTTPTypes

/// Whose turn it is on one HTTP/1.1 connection of the gateway: the gateway's own invoke path
/// (``GatewayHTTPHandler``) or Hummingbird (every other route). One request is served at a time; the parts of requests
/// pipelined behind it wait in order, and while they wait the connection reads no more. Transitions return what to do.
struct GatewayConnection {
    private enum Turn {
        /// No request is being served.
        case idle
        /// The gateway serves the current request; `complete` once its end has been read.
        case invoking(complete: Bool)
        /// Hummingbird serves the current request: done when its end has been read and its response's end written.
        case forwarding(requestComplete: Bool, responseComplete: Bool)
        /// The connection closes: nothing more is read or answered.
        case closed
    }

    /// What to do with a part that was read.
    enum ReadAction: Equatable {
        /// Hand it to the gateway's invoke path.
        case invoke(HTTPRequestPart)
        /// Pass it on to Hummingbird.
        case forward(HTTPRequestPart)
        /// Nothing now: it waits behind the request being served, or the connection closes.
        case none
    }

    private var turn = Turn.idle
    /// Parts of pipelined requests read while another request was served.
    private var waiting: Deque<HTTPRequestPart> = []
    /// Whether a read was asked for while reading was paused.
    private var readPending = false

    /// Takes a part read from the connection; `invokes` tells whether it is the head of a request for the gateway.
    mutating func read(_ part: HTTPRequestPart, invokes: Bool) -> ReadAction {
        switch (turn, part) {
        case (.closed, _):
            return .none
        case (.idle, .head):
            if invokes {
                turn = .invoking(complete: false)
                return .invoke(part)
            }
            turn = .forwarding(requestComplete: false, responseComplete: false)
            return .forward(part)
        case (.idle, _):
            // A body or end with no head: the decoder's business; Hummingbird answers it.
            return .forward(part)
        case (.invoking(complete: false), .end):
            turn = .invoking(complete: true)
            return .invoke(part)
        case (.invoking(complete: false), _):
            return .invoke(part)
        case (.forwarding(requestComplete: false, let responded), .end):
            turn = .forwarding(requestComplete: true, responseComplete: responded)
            if responded { finish() }
            return .forward(part)
        case (.forwarding(requestComplete: false, _), _):
            return .forward(part)
        case (.invoking(complete: true), _), (.forwarding(requestComplete: true, _), _):
            waiting.append(part)
            return .none
        }
    }

    /// Notes a part Hummingbird wrote: the end of its response may end its turn.
    /// - Returns: whether the connection is idle now (``nextWaitingPart()`` then has the parts that waited).
    mutating func wrote(_ part: HTTPResponsePart) -> Bool {
        guard case .end = part, case .forwarding(let requestComplete, responseComplete: false) = turn else {
            return false
        }
        turn = .forwarding(requestComplete: requestComplete, responseComplete: true)
        return finish()
    }

    /// The gateway answered its request: the connection is idle (``nextWaitingPart()`` has the parts that waited).
    mutating func answered() {
        guard case .invoking = turn else { return }
        turn = .idle
    }

    /// The next part that waited, while the request it belongs to can be served now (none while a request before
    /// it is answered); read it again with ``read(_:invokes:)``.
    mutating func nextWaitingPart() -> HTTPRequestPart? {
        switch turn {
        case .idle, .invoking(complete: false), .forwarding(requestComplete: false, _): return waiting.popFirst()
        case .invoking(complete: true), .forwarding(requestComplete: true, _), .closed: return nil
        }
    }

    /// Whether to pass a read on to the connection now. While parts of pipelined requests wait (or the connection
    /// closes) it reads no more: a read asked for then waits for ``takePendingRead()``. A caller that waits for each
    /// answer before its next request never pauses the connection (pausing costs two system calls).
    mutating func shouldRead() -> Bool {
        if case .closed = turn {
            return false
        }
        guard waiting.isEmpty else {
            readPending = true
            return false
        }
        return true
    }

    /// Whether a read waited and the connection may read now.
    mutating func takePendingRead() -> Bool {
        guard readPending, case .idle = turn, waiting.isEmpty else { return false }
        readPending = false
        return true
    }

    /// The connection closes (an answer that asked for it, or the peer went away).
    mutating func close() {
        turn = .closed
        waiting.removeAll()
    }

    /// Ends Hummingbird's turn once both its request and its response are complete.
    @discardableResult
    private mutating func finish() -> Bool {
        guard case .forwarding(requestComplete: true, responseComplete: true) = turn else { return false }
        turn = .idle
        return true
    }
}
