import Pipelines
import Testing

@Suite("A pipeline input's JSON Schema, from its Decodable conformance")
struct InputSchemaTests {
    struct Point: Codable, Sendable {
        var x: Double
        var y: Double
    }

    struct Order: Codable, Sendable {
        var id: Int
        var express: Bool
        var note: String?
        var points: [Point]
        var tags: [String]
        var extra: JSONValue
    }

    enum Colour: String, Codable, Sendable {
        case red, green
    }

    struct Painted: Codable, Sendable {
        var colour: Colour
    }

    final class Node: Codable, @unchecked Sendable {
        var next: Node?
    }

    @Test func structsArraysOptionalsAndScalarsAreDescribed() {
        let point: JSONValue = .object([
            "type": "object", "properties": .object(["x": ["type": "number"], "y": ["type": "number"]]),
            "required": ["x", "y"],
        ])
        let expected: JSONValue = .object([
            "type": "object",
            "properties": .object([
                "id": ["type": "integer"], "express": ["type": "boolean"], "note": ["type": ["string", "null"]],
                "points": .object(["type": "array", "items": point]),
                "tags": .object(["type": "array", "items": ["type": "string"]]), "extra": .object([:]),
            ]),
            "required": ["id", "express", "points", "tags", "extra"],
        ])
        #expect(InputSchema.of(Order.self) == expected)
        #expect(InputSchema.of([Int].self) == .object(["type": "array", "items": ["type": "integer"]]))
        #expect(InputSchema.of(String.self) == .object(["type": "string"]))
    }

    @Test func whatTheProbeCannotSeeIsLeftOpen() {
        // An enum of strings refuses the probe's "": the whole schema is open rather than wrong.
        #expect(InputSchema.of(Painted.self) == .object([:]))
        #expect(InputSchema.of(Node.self) == .object([:]))
        #expect(InputSchema.of(JSONValue.self) == .object([:]))
    }
}
