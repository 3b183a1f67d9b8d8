import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Serves `POST /v1/pipelines/{name}/invoke` on the connection's event loop, and passes every other request on to
/// Hummingbird (``GatewayConnection`` keeps the two in turn).
///
/// The invoke path is the gateway's hot path, so it does not go through Hummingbird's router: there, each request
/// is handed from the event loop to a task and back, which measured 47 µs of CPU a call against 18 µs for a handler
/// on the event loop (docs/benchmarks.md). Here the request is produced from the event loop and the response written
/// from it, with no task in between.
final class GatewayHTTPHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// The request the gateway is reading.
    private enum Current {
        case none
        /// Reading the body of an admitted call.
        case reading(Gateway.Invocation, body: ByteBuffer, keepAlive: Bool)
        /// Reading (and dropping) the body of a call refused at its head.
        case refused(Gateway.Answer, keepAlive: Bool)
        /// Waiting for the answer to the call numbered `call`.
        case answering(call: UInt64, keepAlive: Bool)
    }

    private let gateway: Gateway
    private var connection = GatewayConnection()
    private var current = Current.none
    /// Numbers the calls on this connection, so that an answer finds its call.
    private var calls: UInt64 = 0
    private var context: ChannelHandlerContext?

    init(gateway: Gateway) {
        self.gateway = gateway
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        connection.close()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.close()
        current = .none
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        take(unwrapInboundIn(data), context: context)
    }

    func read(context: ChannelHandlerContext) {
        if connection.shouldRead() { context.read() }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let idle = connection.wrote(unwrapOutboundIn(data))
        context.write(data, promise: promise)
        if idle { resume(context: context) }
    }

    /// Serves `part`. - Returns: whether it went to Hummingbird.
    @discardableResult
    private func take(_ part: HTTPRequestPart, context: ChannelHandlerContext) -> Bool {
        var pipeline: String?
        if case .head(let head) = part { pipeline = Gateway.invokedPipeline(head) }
        switch connection.read(part, invokes: pipeline != nil) {
        case .forward(let part):
            context.fireChannelRead(wrapInboundOut(part))
            return true
        case .invoke(let part): invoke(part, pipeline: pipeline ?? "", context: context)
        case .none: break
        }
        return false
    }

    /// Takes a part of a call; `pipeline` is the one a head calls.
    private func invoke(_ part: HTTPRequestPart, pipeline: String, context: ChannelHandlerContext) {
        switch (part, current) {
        case (.head(let head), _):
            let keepAlive = !(head.headerFields[.connection]?.lowercased().contains("close") ?? false)
            let expectsContinue = head.headerFields[.expect]?.lowercased() == "100-continue"
            switch gateway.admit(head, pipeline: pipeline) {
            case .invoke(let invocation):
                current = .reading(
                    invocation, body: context.channel.allocator.buffer(capacity: 0), keepAlive: keepAlive)
                if expectsContinue {
                    context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
                }
            case .refuse(let answer) where expectsContinue:
                // The caller waits to be told to send its body: told no instead, it may send it or not, so the
                // connection closes after the answer.
                respond(answer, keepAlive: false, context: context)
            case .refuse(let answer):
                current = .refused(answer, keepAlive: keepAlive)
            case .refuseAndClose(let answer):
                respond(answer, keepAlive: false, context: context)
            }
        case (.body(var chunk), .reading(let invocation, var body, let keepAlive)):
            guard body.readableBytes + chunk.readableBytes <= gateway.maxBodyBytes else {
                return respond(gateway.refuseBodyTooLarge(invocation), keepAlive: false, context: context)
            }
            current = .none  // the buffer is uniquely referenced while it grows
            body.writeBuffer(&chunk)
            current = .reading(invocation, body: body, keepAlive: keepAlive)
        case (.end, .reading(let invocation, let body, let keepAlive)):
            calls += 1
            let call = calls
            current = .answering(call: call, keepAlive: keepAlive)
            let loop = context.eventLoop
            let handler = NIOLoopBound(self, eventLoop: loop)
            gateway.invoke(invocation, body: body) { answer in
                if loop.inEventLoop {
                    handler.value.answer(answer, call: call)
                } else {
                    loop.execute { handler.value.answer(answer, call: call) }
                }
            }
        case (.end, .refused(let answer, let keepAlive)):
            respond(answer, keepAlive: keepAlive, context: context)
        case (.body, _), (.end, _):
            break
        }
    }

    /// The answer to call `call`, on the event loop; dropped when the connection has closed since.
    private func answer(_ answer: Gateway.Answer, call: UInt64) {
        guard let context, case .answering(call, let keepAlive) = current else { return }
        respond(answer, keepAlive: keepAlive, context: context)
    }

    private func respond(_ answer: Gateway.Answer, keepAlive: Bool, context: ChannelHandlerContext) {
        current = .none
        var headers = answer.headers
        headers[.contentLength] = String(answer.body.readableBytes)
        headers[.server] = "sluice"
        headers[.date] = HTTPDate.now
        if !keepAlive { headers[.connection] = "close" }
        context.write(wrapOutboundOut(.head(HTTPResponse(status: answer.status, headerFields: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(answer.body)), promise: nil)
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            connection.answered()
            resume(context: context)
        } else {
            connection.close()
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    /// Serves the requests that waited while the connection was busy, then reads on.
    private func resume(context: ChannelHandlerContext) {
        var forwarded = false
        while let part = connection.nextWaitingPart() { forwarded = take(part, context: context) || forwarded }
        // Hummingbird takes what it was handed at the end of a read.
        if forwarded { context.fireChannelReadComplete() }
        if connection.takePendingRead() { context.read() }
    }
}

/// The `Date` header's value (RFC 9110), made once a second.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, value: String)>((-1, ""))

    static var now: String {
        var seconds = timespec()
        clock_gettime(CLOCK_REALTIME, &seconds)
        let second = seconds.tv_sec
        if let cached = cache.withLock({ $0.second == second ? $0.value : nil }) { return cached }
        let value = format(second)
        cache.withLock { $0 = (second, value) }
        return value
    }

    /// `Sun, 06 Nov 1994 08:49:37 GMT` for a second of the Unix epoch.
    static func format(_ second: Int) -> String {
        var time = time_t(second)
        var parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return
            "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}

/// Hummingbird's HTTP/1.1 channel with a ``GatewayHTTPHandler`` just before the request handling: the handler comes
/// after Hummingbird's idle timeout and graceful shutdown handling (`HTTPConnectionStateHandler`), so that those see
/// the gateway's own requests and answers too.
struct GatewayChildChannel: ServerChildChannel {
    let http1: HTTP1Channel
    let gateway: Gateway

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP1Channel.Value> {
        http1.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let pipeline = channel.pipeline.syncOperations
            let states = try pipeline.handler(type: HTTPConnectionStateHandler.self)
            try pipeline.addHandler(GatewayHTTPHandler(gateway: gateway), position: .after(states))
            return value
        }
    }

    func handle(value: HTTP1Channel.Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with the gateway's invoke path on the event loop (``GatewayChildChannel``).
    static func gateway(_ gateway: Gateway, configuration: HTTP1Channel.Configuration) -> HTTPServerBuilder {
        .init { responder in
            GatewayChildChannel(
                http1: HTTP1Channel(responder: responder, configuration: configuration), gateway: gateway)
        }
    }
}
