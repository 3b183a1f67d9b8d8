import Foundation
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Serving
import Testing

@testable import SluiceCLI

@Suite("The gateway's HTTP connections: whose turn, which path, the Date header, request ids")
struct GatewayConnectionTests {
    private let invoke = HTTPRequestPart.head(
        HTTPRequest(method: .post, scheme: "http", authority: "x", path: "/v1/pipelines/p/invoke"))
    private let health = HTTPRequestPart.head(
        HTTPRequest(method: .get, scheme: "http", authority: "x", path: "/health"))
    private let body = HTTPRequestPart.body(ByteBuffer(string: "{}"))

    @Test func aCallIsServedByTheGatewayAndAnotherRouteByHummingbird() {
        var connection = GatewayConnection()
        #expect(connection.read(invoke, invokes: true) == .invoke(invoke))
        #expect(connection.read(body, invokes: false) == .invoke(body))
        #expect(connection.read(.end(nil), invokes: false) == .invoke(.end(nil)))
        connection.answered()
        #expect(connection.read(health, invokes: false) == .forward(health))
        #expect(connection.read(.end(nil), invokes: false) == .forward(.end(nil)))
        #expect(!connection.took { $0.wrote(.head(HTTPResponse(status: .ok))) })
        #expect(connection.took { $0.wrote(.end(nil)) })
        #expect(connection.read(invoke, invokes: true) == .invoke(invoke))
    }

    @Test func pipelinedRequestsWaitInOrderAndPauseReading() {
        var connection = GatewayConnection()
        _ = connection.read(invoke, invokes: true)
        _ = connection.read(.end(nil), invokes: false)
        #expect(connection.took { $0.shouldRead() })
        // Read while the call is answered: they wait, and the connection reads no more.
        for part in [health, .end(nil), invoke, body, .end(nil)] {
            #expect(connection.read(part, invokes: part == invoke) == .none)
        }
        #expect(!connection.took { $0.shouldRead() })
        #expect(connection.nextWaitingPart() == nil)
        #expect(!connection.took { $0.takePendingRead() })

        connection.answered()
        #expect(connection.nextWaitingPart() == health)
        #expect(connection.read(health, invokes: false) == .forward(health))
        #expect(connection.nextWaitingPart() == .end(nil))
        #expect(connection.read(.end(nil), invokes: false) == .forward(.end(nil)))
        // Hummingbird answers before the call behind it is taken.
        #expect(connection.nextWaitingPart() == nil)
        #expect(connection.took { $0.wrote(.end(nil)) })
        for expected in [invoke, body, .end(nil)] {
            let part = connection.nextWaitingPart()
            #expect(part == expected)
            if let part { #expect(connection.read(part, invokes: part == invoke) == .invoke(part)) }
        }
        #expect(connection.nextWaitingPart() == nil)
        connection.answered()
        #expect(connection.took { $0.takePendingRead() })
        #expect(!connection.took { $0.takePendingRead() })
    }

    @Test func hummingbirdMayAnswerBeforeItsRequestEnds() {
        var connection = GatewayConnection()
        _ = connection.read(health, invokes: false)
        #expect(!connection.took { $0.wrote(.end(nil)) })
        #expect(connection.read(body, invokes: false) == .forward(body))
        #expect(connection.read(.end(nil), invokes: false) == .forward(.end(nil)))
        #expect(connection.read(invoke, invokes: true) == .invoke(invoke))
    }

    @Test func aClosedConnectionTakesNothing() {
        var connection = GatewayConnection()
        _ = connection.read(invoke, invokes: true)
        _ = connection.read(.end(nil), invokes: false)
        _ = connection.read(health, invokes: false)
        connection.close()
        #expect(connection.read(invoke, invokes: true) == .none)
        #expect(connection.nextWaitingPart() == nil)
        #expect(!connection.took { $0.shouldRead() })
        connection.answered()
        #expect(connection.read(invoke, invokes: true) == .none)
    }

    @Test func theInvokePathNamesItsPipeline() {
        func pipeline(_ method: HTTPRequest.Method, _ path: String) -> String? {
            Gateway.invokedPipeline(HTTPRequest(method: method, scheme: "http", authority: "x", path: path))
        }
        #expect(pipeline(.post, "/v1/pipelines/text-stats/invoke") == "text-stats")
        #expect(pipeline(.post, "/v1/pipelines/a.b_c/invoke?debug=1") == "a.b_c")
        #expect(pipeline(.post, "/v1/pipelines/no%20pe/invoke") == "no%20pe")
        #expect(pipeline(.get, "/v1/pipelines/text-stats/invoke") == nil)
        #expect(pipeline(.post, "/v1/pipelines//invoke") == nil)
        #expect(pipeline(.post, "/v1/pipelines/a/b/invoke") == nil)
        #expect(pipeline(.post, "/v1/pipelines/a/invoke/") == nil)
        #expect(pipeline(.post, "/v2/pipelines/a/invoke") == nil)
        #expect(pipeline(.post, "/v1/pipelines/invoke") == nil)
    }

    @Test func theDateHeaderIsRFC9110s() {
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(1_796_198_400) == "Wed, 02 Dec 2026 08:00:00 GMT")
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        #expect(abs((formatter.date(from: HTTPDate.now) ?? .distantPast).timeIntervalSinceNow) < 5)
    }

    @Test func requestIDsAreUniqueHexadecimal() {
        let ids = (0..<10_000).map { _ in PipelineClient.newRequestID() }
        #expect(Set(ids).count == ids.count)
        let digits = Set("0123456789abcdef".utf8)
        #expect(ids.allSatisfy { id in id.utf8.count == 32 && id.utf8.allSatisfy(digits.contains) })
        // One process's ids share their prefix; the rest does not count up.
        #expect(Set(ids.map { $0.prefix(16) }).count == 1)
        #expect(ids[1].suffix(16) != ids[0].suffix(16))
    }
}

extension GatewayConnection {
    /// Runs a mutating check, for `#expect`, which cannot call a mutating method itself.
    fileprivate mutating func took(_ check: (inout GatewayConnection) -> Bool) -> Bool { check(&self) }
}
