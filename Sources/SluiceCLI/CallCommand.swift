import ArgumentParser
import Kafka
import Logging
import Pipelines
import Serving

/// `sluice call`: sends requests to a pipeline's workers and prints the responses.
struct CallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Call a pipeline over Kafka and print each response (one JSON line per input, in input order).",
        discussion: """
            Each input is the pipeline's input as JSON: --data, or one per non-blank line of standard input. Up to \
            --window requests are in flight at once. Exits 1 if a response is an error or does not come in time.
            """
    )

    @OptionGroup var client: ClientOptions

    @Option(name: .long, help: "One input as JSON; without it, each line of standard input is one.")
    var data: String?

    @Option(name: .long, help: "Seconds to wait for each response.")
    var timeout = 30.0

    @Option(name: .customLong("deadline-ms"), help: "Milliseconds a request may wait before a worker runs it.")
    var deadlineMilliseconds: Int?

    @Option(
        name: .long,
        help:
            "W3C trace context (00-<trace id>-<parent span id>-<flags>) sent with each request: the workers' spans join that trace."
    )
    var traceparent: String?

    @Option(name: .long, help: "Requests in flight at once.")
    var window = 64

    func validate() throws {
        guard timeout > 0 else { throw ValidationError("--timeout \(timeout) must be positive") }
        guard window >= 1 else { throw ValidationError("--window \(window) must be at least 1") }
    }

    func run() async throws {
        let client = try PipelineClient(
            kafka: self.client.settings(), pipeline: self.client.pipeline, responsesTopic: self.client.responsesTopic,
            logger: Logger(label: "sluice.call"))
        let requestsTopic = self.client.requestsTopic ?? WireProtocol.requestsTopic(self.client.pipeline)
        var inputs: [String] = []
        if let data {
            inputs = [data]
        } else {
            while let line = readLine(strippingNewline: true) {
                if !line.allSatisfy(\.isWhitespace) { inputs.append(line) }
            }
        }
        let timeout = Duration.milliseconds(Int(self.timeout * 1000))
        let deadline = deadlineMilliseconds.map { Duration.milliseconds($0) }
        var failed = false
        var next = 0
        while next < inputs.count {
            let chunk = inputs[next..<min(inputs.count, next + window)]
            next += chunk.count
            let results = await withTaskGroup(of: (Int, Result<ResponseMessage, any Error>).self) { group in
                for (index, input) in chunk.enumerated() {
                    group.addTask {
                        do {
                            return (
                                index,
                                .success(
                                    try await client.call(
                                        Array(input.utf8), to: requestsTopic, deadline: deadline, timeout: timeout,
                                        traceparent: traceparent))
                            )
                        } catch {
                            return (index, .failure(error))
                        }
                    }
                }
                var results = [Result<ResponseMessage, any Error>?](repeating: nil, count: chunk.count)
                for await (index, result) in group { results[index] = result }
                return results
            }
            for result in results {
                switch result {
                case .success(let response)?:
                    if response.isError { failed = true }
                    print(String(decoding: response.value, as: UTF8.self))
                case .failure(let error)?:
                    failed = true
                    var writer = JSONWriter()
                    writer.object { out in
                        out.field("status", "error")
                        out.field("error", ErrorDetail(code: "timeout", message: "\(error)"))
                    }
                    print(String(decoding: writer.bytes, as: UTF8.self))
                case nil:
                    failed = true
                }
            }
        }
        await client.close()
        if failed { throw ExitCode(1) }
    }
}
