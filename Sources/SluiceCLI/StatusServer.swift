import ArgumentParser
import Hummingbird
import Logging
import Pipelines
import ServiceLifecycle

/// `--http HOST:PORT`: `GET /health`, `GET /ready` and `GET /metrics` on Hummingbird (swift-nio): IPv4 and IPv6
/// (`[::]:8080`), many connections at once, HTTP/1.1 keep-alive. A `Service` of the command's `ServiceGroup`: it
/// listens when the group runs (logging the port it got, for port 0) and stops after the worker or materializer it
/// reports on.
enum StatusServer {
    /// What the probes answer: `GET /health` 200 when live, `GET /ready` 200 when ready; 503 otherwise.
    struct Probes {
        var live: Bool
        var ready: Bool
    }

    /// The server for `address`, if one is given. `health` writes the members of the health object (both probes
    /// answer it) and says which probes pass; `metrics` returns the Prometheus text.
    /// - Throws: a `ValidationError` naming the address when it is not `HOST:PORT`.
    static func healthAndMetrics(
        address: String?, logger: Logger, health: @escaping @Sendable (inout JSONWriter) -> Probes,
        metrics: @escaping @Sendable () -> String
    ) throws -> (any Service)? {
        guard let address else { return nil }
        let (host, port) = try parse(address)
        let router = Router()
        addRoutes(to: router, health: health, metrics: metrics)
        return Application(
            router: router, configuration: ApplicationConfiguration(address: .hostname(host, port: port)),
            onServerRunning: { channel in
                logger.info("health and metrics on http://\(address): port \(channel.localAddress?.port ?? port)")
            },
            logger: logger)
    }

    /// Adds `GET /health`, `GET /ready` and `GET /metrics` to `router` (see ``healthAndMetrics(address:logger:health:metrics:)``).
    static func addRoutes(
        to router: Router<BasicRequestContext>, health: @escaping @Sendable (inout JSONWriter) -> Probes,
        metrics: @escaping @Sendable () -> String
    ) {
        @Sendable func probe(_ passes: (Probes) -> Bool) -> Response {
            var body = JSONWriter()
            var probes = Probes(live: false, ready: false)
            body.object { out in probes = health(&out) }
            var bytes = body.bytes
            bytes.append(UInt8(ascii: "\n"))
            return Response(
                status: passes(probes) ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        router.get("/health") { _, _ in probe(\.live) }
        router.get("/ready") { _, _ in probe(\.ready) }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: metrics())))
        }
    }

    /// `HOST:PORT`, the host an IPv4 address, a name, or an IPv6 address in brackets (`[::1]:8080`); an empty host
    /// or `localhost` is 127.0.0.1.
    /// - Throws: a `ValidationError` (a usage error) naming the address.
    static func parse(_ address: String) throws -> (host: String, port: Int) {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw ValidationError("--http '\(address)' is not HOST:PORT (an IPv6 host in brackets: [::]:8080)")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
        } else if host.contains(":") {
            throw ValidationError("--http '\(address)': write an IPv6 host in brackets, as [\(host)]:\(port)")
        }
        if host.isEmpty || host == "localhost" { host = "127.0.0.1" }
        return (host, Int(port))
    }
}
