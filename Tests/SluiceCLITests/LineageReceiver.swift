import Hummingbird
import Synchronization

/// A small OpenLineage HTTP endpoint on 127.0.0.1 (`POST /api/v1/lineage`, as Marquez serves it): keeps each event's
/// bytes, after answering the first `failing` requests with 503, and answers 503 to every request while it is down.
final class LineageReceiver: Sendable {
    private let state = Mutex<(bodies: [[UInt8]], refused: Int, down: Bool)>(([], 0, false))
    private let server = Mutex<TestHTTPServer?>(nil)

    private init() {}

    static func start(failing: Int) async throws -> LineageReceiver {
        let receiver = LineageReceiver()
        let router = Router()
        router.post("/api/v1/lineage") { request, _ in
            let body = try await request.body.collect(upTo: 16 << 20)
            let accepted = receiver.state.withLock { state -> Bool in
                guard state.refused >= failing, !state.down else {
                    state.refused += 1
                    return false
                }
                state.bodies.append(Array(body.readableBytesView))
                return true
            }
            return Response(status: accepted ? .created : .serviceUnavailable)
        }
        let server = try await TestHTTPServer.start(label: "lineage-receiver", router: router)
        receiver.server.withLock { $0 = server }
        return receiver
    }

    var endpoint: String { server.withLock { $0?.endpoint } ?? "" }
    var bodies: [[UInt8]] { state.withLock { $0.bodies } }
    var refused: Int { state.withLock { $0.refused } }

    /// While down, every request is answered with 503 (and counted as refused).
    func setDown(_ down: Bool) {
        state.withLock { $0.down = down }
    }

    func stop() {
        server.withLock { $0 }?.stop()
    }
}
