import Foundation
import Pipelines
import Testing

@Suite("Canonical JSON straight from Encodable values")
struct CanonicalJSONTests {
    enum Shape: Codable, Hashable {
        case circle(radius: Double)
        case polygon(points: [[Int]], label: String?)
        case empty
    }

    class Base: Codable {
        var id = 7
    }

    final class Derived: Base, @unchecked Sendable {
        var extra = "x"
        enum CodingKeys: String, CodingKey { case extra }
        override init() { super.init() }
        required init(from decoder: any Decoder) throws { fatalError("not decoded in these tests") }
        override func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(extra, forKey: .extra)
            try super.encode(to: container.superEncoder())
        }
    }

    /// Fills a nested container after a later sibling member: the pieces must still come out whole.
    struct Interleaved: Encodable {
        enum Keys: String, CodingKey { case b, a, c }
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            var nested = container.nestedUnkeyedContainer(forKey: .b)
            try container.encode("last", forKey: .c)
            try nested.encode(1)
            var deeper = nested.nestedContainer(keyedBy: Keys.self, )
            try container.encode(true, forKey: .a)
            try deeper.encode("z", forKey: .c)
            try nested.encode(2)
        }
    }

    struct Nothing: Encodable {
        func encode(to encoder: any Encoder) throws {}
    }

    struct Everything: Codable {
        var text = "héllo \"world\"\n\u{0}"
        var optional: Int? = nil
        var present: Int? = 3
        var numbers: [Double] = [0.1, 2.5, -1e300, 1e-300]  // integral doubles differ on purpose: see below
        var small: [Int8] = [-128, 127]
        var big: UInt64 = 18_446_744_073_709_551
        var flags: [String: Bool] = ["b": true, "a": false, "é": true, "Z": false]
        var byNumber: [Int: String] = [2: "two"]
        var shapes: [Shape] = [.circle(radius: 1.5), .polygon(points: [[0, 0], [1, 1]], label: nil), .empty]
        var float: Float = 0.5
    }

    @Test func matchesFoundationsJSONTreeForTheSameValue() throws {
        let value = Everything()
        let ours = try CanonicalJSON.encode(value)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let foundation = try encoder.encode(value)
        #expect(
            try JSONValue(parsing: ours) == JSONValue(parsing: Array(foundation)),
            "\(String(decoding: ours, as: UTF8.self))\n\(String(decoding: foundation, as: UTF8.self))")
        // And the bytes are canonical: writing the parsed tree again gives the same bytes.
        #expect(CanonicalJSON.bytes(of: try JSONValue(parsing: ours)) == ours)
    }

    @Test func numbersKeepTheirKind() throws {
        // Foundation writes 2.0 as 2; canonical JSON keeps a Double a double, so equal values hash equally whatever
        // their digits, and an Int an integer.
        let json = String(decoding: try CanonicalJSON.encode([2.0, -0.0, 1e21, 0.1]), as: UTF8.self)
        #expect(json == "[2.0,-0.0,1e+21,0.1]")
        #expect(
            String(decoding: try CanonicalJSON.encode([2, -9_223_372_036_854_775_807]), as: UTF8.self)
                == "[2,-9223372036854775807]")
        #expect(try JSONValue(parsing: Array(json.utf8)) == [2.0, -0.0, 1e21, 0.1])
    }

    @Test func interleavedNestedContainersComeOutWhole() throws {
        let json = String(decoding: try CanonicalJSON.encode(Interleaved()), as: UTF8.self)
        #expect(json == #"{"a":true,"b":[1,{"c":"z"},2],"c":"last"}"#)
    }

    @Test func superEncodersAndEmptyValues() throws {
        #expect(
            String(decoding: try CanonicalJSON.encode(Derived()), as: UTF8.self) == #"{"extra":"x","super":{"id":7}}"#)
        #expect(String(decoding: try CanonicalJSON.encode(Nothing()), as: UTF8.self) == "{}")
        #expect(String(decoding: try CanonicalJSON.encode([Nothing(), Nothing()]), as: UTF8.self) == "[{},{}]")
        #expect(String(decoding: try CanonicalJSON.encode([String: Int]()), as: UTF8.self) == "{}")
        #expect(String(decoding: try CanonicalJSON.encode([[Int]]()), as: UTF8.self) == "[]")
    }

    @Test func keysSortByTheirUTF8Bytes() throws {
        let json = String(decoding: try CanonicalJSON.encode(["é": 1, "z": 2, "Z": 3, "a": 4]), as: UTF8.self)
        #expect(json == #"{"Z":3,"a":4,"z":2,"é":1}"#)
        let tree: JSONValue = ["é": 1, "z": 2, "Z": 3, "a": 4]
        #expect(String(decoding: CanonicalJSON.bytes(of: tree), as: UTF8.self) == json)
    }

    @Test func valuesJSONCannotHoldAreErrorsWithTheirPath() throws {
        struct Reading: Encodable {
            var values: [Double]
        }
        let error = try #require(throws: EncodingError.self) {
            try CanonicalJSON.encode(Reading(values: [1, .infinity]))
        }
        guard case .invalidValue(_, let context) = error else {
            Issue.record("expected .invalidValue, got \(String(describing: error))")
            return
        }
        #expect(context.codingPath.map(\.stringValue) == ["values", "1"])
        #expect(throws: EncodingError.self) { try CanonicalJSON.encode(["big": UInt64.max]) }
        #expect(throws: EncodingError.self) { try CanonicalJSON.encode(Float.nan) }
    }

    @Test func writtenStringsReadBackExactlyWhateverTheyHold() throws {
        // Characters that must be escaped at every position, so the eight-bytes-at-a-time scan is tested at and across
        // word boundaries; long enough for the buffer to grow several times.
        let alphabet: [Character] = ["a", "\"", "\\", "\n", "\u{1}", "\u{1F}", " ", "é", "😀", "/", "\u{7F}", "~"]
        var generator = SystemRandomNumberGenerator()
        var writer = JSONWriter(capacity: 16)
        var expected: [String] = []
        for length in 0..<200 {
            let text = String((0..<length).map { _ in alphabet.randomElement(using: &generator)! })
            expected.append(text)
        }
        writer.array { out in for text in expected { out.string(text) } }
        let bytes = writer.bytes
        let foundation = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String])
        #expect(foundation == expected)
        #expect(try JSONValue(parsing: bytes) == .array(expected.map(JSONValue.string)))
    }

    @Test func integersAreWrittenAsSwiftWritesThem() {
        var generator = SystemRandomNumberGenerator()
        let edges: [Int64] = [
            0, 1, -1, 9, 10, -10, 99, 100, Int64.max, Int64.min, Int64.min + 1, 1_796_052_414_063_303,
        ]
        for value in edges
            + (0..<500).map({ _ in
                Int64.random(in: .min ... .max, using: &generator) >> Int64.random(in: 0...63, using: &generator)
            })
        {
            var writer = JSONWriter()
            writer.int(value)
            #expect(String(decoding: writer.bytes, as: UTF8.self) == String(value), "\(value)")
        }
    }

    @Test func stringsOfEveryLengthAreEscapedWhereTheyNeedIt() throws {
        // The writer copies a string in words when none of its bytes needs an escape: each length up to 40, plain
        // and with a byte that needs one (or a multi-byte character) at each place.
        for length in 0...40 {
            let plain = String((0..<length).map { Character(Unicode.Scalar(UInt8(ascii: "a") + UInt8($0 % 26))) })
            var strings = [plain]
            for special in ["\"", "\\", "\n", "\u{01}", "\u{1F}", "é", " "] {
                for place in 0..<max(length, 1) {
                    var characters = Array(plain)
                    if place < characters.count {
                        characters[place] = Character(special)
                    } else {
                        characters = [Character(special)]
                    }
                    strings.append(String(characters))
                }
            }
            for string in strings {
                var writer = JSONWriter()
                writer.string(string)
                #expect(try JSONValue(parsing: writer.bytes) == .string(string), "\(string.debugDescription)")
                let escapes = string.utf8.contains { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }
                #expect(escapes || writer.bytes == Array("\"\(string)\"".utf8), "\(string.debugDescription)")
            }
        }
    }

    @Test func objectMembersAreSortedByTheirUTF8Bytes() throws {
        // Names that share prefixes, differ in length or case, and hold characters of one to four UTF-8 bytes.
        let names = ["", "a", "ab", "abc", "b", "B", "é", "😀", "z", "zz", "\u{7F}", "Ω"]
        var members: [String: JSONValue] = [:]
        for (index, name) in names.enumerated() { members[name] = .int(Int64(index)) }
        var writer = JSONWriter()
        writer.value(.object(members))
        let written = try JSONValue(parsing: writer.bytes)
        guard case .object(let parsed) = written else {
            Issue.record("not an object")
            return
        }
        #expect(parsed == members)
        // Each name's position in the bytes written: in UTF-8 byte order.
        let bytes = writer.bytes
        let positions = names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }.map { name in
            let needle = Array(("\"" + name + "\":").utf8)
            return (0...(bytes.count - needle.count)).first { Array(bytes[$0..<$0 + needle.count]) == needle } ?? -1
        }
        #expect(!positions.contains(-1) && positions == positions.sorted(), "\(String(decoding: bytes, as: UTF8.self))")
    }

    @Test("A duration in milliseconds is written from its microseconds as Swift writes that Double")
    func millisecondsFromMicroseconds() throws {
        let micros: [Int64] = [0, 1, 5, 10, 120, 999, 1000, 1001, 1230, 12_000, 123_456, 86_400_000_000, -1500, -7]
        for value in micros {
            var writer = JSONWriter()
            writer.milliseconds(micros: value)
            #expect(String(decoding: writer.bytes, as: UTF8.self) == (Double(value) / 1000).description, "\(value)")
        }
    }

    @Test func decodingReadsWhatEncodingWroteAndAgreesWithFoundation() throws {
        let bytes = try CanonicalJSON.encode(Everything())
        let ours = try JSONValueDecoder.decode(Everything.self, from: bytes)
        let foundation = try JSONDecoder().decode(Everything.self, from: Data(bytes))
        #expect(try CanonicalJSON.encode(ours) == bytes)
        #expect(try CanonicalJSON.encode(foundation) == bytes)
        #expect(try JSONValueDecoder.decode([Float].self, from: Array("[0.5, 2]".utf8)) == [0.5, 2])
        #expect(try JSONValueDecoder.decode(Int8.self, from: Array("-128".utf8)) == -128)
        #expect(try JSONValueDecoder.decode(Int.self, from: Array("3.0".utf8)) == 3)
        #expect(try JSONValueDecoder.decode([String: Int?].self, from: Array(#"{"a": null}"#.utf8)) == ["a": nil])
    }

    /// Names, escapes and sizes that the decoder finds in place, read as Foundation reads them; a repeated name keeps
    /// its last value, as the parser does (Foundation keeps the first).
    @Test func decodingFindsMembersInPlaceAsFoundationDoes() throws {
        struct Member: Codable, Equatable {
            var ab: Int
            var note: String?
            var grid: [[Int]]?
            var tags: [String: String]?
        }
        let many = (0..<40).map { #""k\#($0)": \#($0)"# }.joined(separator: ", ")
        let documents = [
            #"{"a\u0062": 1, "note": "x\"y\u00e9\ud83d\ude00\n"}"#,
            #"{"note": null, "ab": 4.0, "grid": [[], [1, 2], [3]], "tags": {"é": "e", "b": "\/"}}"#,
            #"{"ab": -5, "tags": {\#(many.replacingOccurrences(of: ": ", with: ": \"").replacingOccurrences(of: ",", with: "\","))"}}"#,
        ]
        for document in documents {
            let bytes = Array(document.utf8)
            let ours = try JSONValueDecoder.decode(Member.self, from: bytes)
            let foundation = try JSONDecoder().decode(Member.self, from: Data(bytes))
            #expect(ours == foundation, "\(document)")
        }
        let numbers = "{" + many + "}"
        let table = try JSONValueDecoder.decode([String: Int].self, from: Array(numbers.utf8))
        #expect(table == Dictionary(uniqueKeysWithValues: (0..<40).map { ("k\($0)", $0) }))
        #expect(try JSONValueDecoder.decode([Int?].self, from: Array("[1, null, 3]".utf8)) == [1, nil, 3])
        // A name written decomposed is the precomposed name, as Swift compares strings.
        struct Accented: Codable, Equatable {
            var café: Int
        }
        let decomposed = Array(#"{"cafe\#u{301}": 8}"#.utf8)
        #expect(try JSONValueDecoder.decode(Accented.self, from: decomposed) == Accented(café: 8))
        #expect(try JSONDecoder().decode(Accented.self, from: Data(decomposed)) == Accented(café: 8))
        for repeated in [#" { "ab" : 6 , "ab" : 7 } "#, #"{"ab": 6, "a\u0062": 7}"#] {
            #expect(try JSONValueDecoder.decode(Member.self, from: Array(repeated.utf8)).ab == 7)
            #expect(try JSONValue(parsing: Array(repeated.utf8)) == ["ab": 7])
        }
    }

    /// Bytes that are not JSON fail decoding exactly where and how they fail parsing.
    @Test(
        arguments: [
            "", "{", "[1,]", "{\"a\":1,}", "01", "1.", "tru", "\"open", "\"\\x\"", "\"\\ud800\"", "{\"a\" 1}", "[1] 2",
            "{1:2}", "1e999", "\"\u{1}\"", String(repeating: "[", count: 600),
        ].map { Array($0.utf8) } + [[0x5B, 0x22, 0xFF, 0x22, 0x5D]])
    func decodingRefusesMalformedJSONAsTheParserDoes(bytes: [UInt8]) {
        let parsing = Result { try JSONValue(parsing: bytes) }
        let decoding = Result { try JSONValueDecoder.decode(JSONValue.self, from: bytes) }
        guard case .failure(let parseError as JSONParseError) = parsing,
            case .failure(let decodeError as JSONParseError) = decoding
        else {
            Issue.record("both must fail with JSONParseError: \(parsing), \(decoding)")
            return
        }
        #expect(decodeError == parseError)
    }

    @Test func decodingErrorsNameThePath() throws {
        struct Inner: Decodable { var count: Int }
        struct Outer: Decodable { var items: [Inner] }
        func failure(_ json: String) -> DecodingError? {
            let bytes: [UInt8] = Array(json.utf8)
            let result = Result { try JSONValueDecoder.decode(Outer.self, from: bytes) }
            guard case .failure(let error) = result else { return nil }
            return error as? DecodingError
        }
        guard case .typeMismatch(_, let context)? = failure(#"{"items": [{"count": 1}, {"count": "2"}]}"#) else {
            Issue.record("a string where an Int belongs must be a type mismatch")
            return
        }
        #expect(context.codingPath.map(\.stringValue) == ["items", "1", "count"])
        guard case .keyNotFound(let key, _)? = failure(#"{"items": [{}]}"#) else {
            Issue.record("a missing member must be keyNotFound")
            return
        }
        #expect(key.stringValue == "count")
        guard case .dataCorrupted? = failure(#"{"items": [{"count": 1.5}]}"#) else {
            Issue.record("1.5 is not an Int")
            return
        }
        guard case .valueNotFound? = failure(#"{"items": null}"#) else {
            Issue.record("null where an array belongs must be valueNotFound")
            return
        }
        #expect(throws: JSONParseError.self) { try JSONValueDecoder.decode(Outer.self, from: Array("{".utf8)) }
    }
}
