import Kafka
import Logging
import Pipelines
import ServiceLifecycle
import Synchronization
import SystemSupport

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A tiny HTTP/1.1 server for `GET /health` and `GET /metrics` (`--http HOST:PORT`), on a thread of its own.
///
/// One request per connection (`Connection: close`), answered from the `routes` closure; requests are read with a
/// size limit and a time limit, so a slow or hostile client cannot hold it for long. It listens from `init` (so that a
/// bad `--http` fails at start-up) and, as a `Service`, until a graceful shutdown or cancellation.
final class StatusServer: Service, Sendable {
    /// A route's answer: status code, content type, body.
    typealias Answer = (status: Int, contentType: String, body: String)

    /// What the probes answer: `GET /health` 200 when live, `GET /ready` 200 when ready; 503 otherwise.
    struct Probes {
        var live: Bool
        var ready: Bool
    }

    private let listener: Int32
    private let thread = Mutex<DedicatedThread?>(nil)
    private let stopped = Atomic<Bool>(false)
    let port: Int

    /// Serves `GET /health`, `GET /ready` and `GET /metrics` (Prometheus text) on `address`, if one is given, and logs
    /// the port. `health` writes the members of the health object (both probes answer it) and says which probes pass.
    static func healthAndMetrics(
        address: String?, logger: Logger, health: @escaping @Sendable (inout JSONWriter) -> Probes,
        metrics: @escaping @Sendable () -> String
    ) throws -> StatusServer? {
        guard let address else { return nil }
        let server = try StatusServer(address: address, logger: logger) { path in
            switch path {
            case "/health", "/ready":
                var body = JSONWriter()
                var probes = Probes(live: false, ready: false)
                body.object { out in probes = health(&out) }
                let passes = path == "/health" ? probes.live : probes.ready
                return (passes ? 200 : 503, "application/json", String(decoding: body.bytes, as: UTF8.self) + "\n")
            case "/metrics":
                return (200, "text/plain; version=0.0.4", metrics())
            default:
                return nil
            }
        }
        logger.info("health and metrics on http://\(address): port \(server.port)")
        return server
    }

    /// Listens on `address` (`HOST:PORT`; port 0 picks a free one).
    /// - Throws: ``StatusServerError`` naming the address when it is malformed or cannot be bound.
    init(address: String, logger: Logger, routes: @escaping @Sendable (String) -> Answer?) throws {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw StatusServerError("--http '\(address)' is not HOST:PORT")
        }
        var host = String(address[..<colon])
        if host.isEmpty || host == "localhost" { host = "127.0.0.1" }
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &socketAddress.sin_addr) == 1 else {
            throw StatusServerError("--http '\(address)': '\(host)' is not an IPv4 address")
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StatusServerError("--http '\(address)': socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            let code = errno
            close(fd)
            throw StatusServerError("--http '\(address)' cannot be bound: \(String(cString: strerror(code)))")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = Int(UInt16(bigEndian: actual.sin_port))
        listener = fd
        let started = try DedicatedThread.start(name: "sluice-http") { [self] in
            serve(logger: logger, routes: routes)
        }
        thread.withLock { $0 = started }
    }

    /// Serves until a graceful shutdown or cancellation, then stops.
    func run() async {
        try? await gracefulShutdown()
        stop()
    }

    /// Stops listening and waits for the thread.
    func stop() {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        thread.withLock { $0 }?.join()
        close(listener)
    }

    private func serve(logger: Logger, routes: @Sendable (String) -> Answer?) {
        while !stopped.load(ordering: .relaxed) {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            answer(client, routes: routes)
            close(client)
        }
    }

    private func answer(_ client: Int32, routes: @Sendable (String) -> Answer?) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1024)
        // The request line and headers, up to 8 KiB.
        while request.count < 8192, !request.ends(with: Array("\r\n\r\n".utf8)), !request.ends(with: [10, 10]) {
            let count = chunk.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            request += chunk[..<count]
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        let answer: Answer
        if parts.count < 2 {
            answer = (400, "text/plain", "bad request\n")
        } else if parts[0] != "GET" && parts[0] != "HEAD" {
            answer = (405, "text/plain", "only GET\n")
        } else {
            let path = String(parts[1].prefix { $0 != "?" })
            answer = routes(path) ?? (404, "text/plain", "not found: \(path)\n")
        }
        let reason =
            [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"][
                answer.status] ?? "Status"
        let body = Array(answer.body.utf8)
        var response = Array(
            "HTTP/1.1 \(answer.status) \(reason)\r\nContent-Type: \(answer.contentType)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
                .utf8)
        if parts.first != "HEAD" { response += body }
        var sent = 0
        while sent < response.count {
            let count = response[sent...].withUnsafeBytes {
                send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if count <= 0 { break }
            sent += count
        }
    }
}

/// `--http` cannot be served: the message names the address and why.
struct StatusServerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension Array where Element == UInt8 {
    fileprivate func ends(with suffix: [UInt8]) -> Bool {
        count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix
    }
}
