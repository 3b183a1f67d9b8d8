import Testing

@testable import Serving

@Suite("Offsets stored in order although requests finish out of order")
struct OffsetWatermarkTests {
    @Test func theWatermarkMovesOnlyPastContiguousDoneRequests() {
        var watermark = OffsetWatermark()
        for offset in [10, 11, 12, 15, 16] as [Int64] { watermark.begin(offset) }
        #expect(watermark.finish(12) == nil)
        #expect(watermark.finish(11) == nil)
        #expect(watermark.finish(10) == 13)
        #expect(watermark.finish(16) == nil)
        #expect(watermark.finish(99) == nil)  // not taken: ignored
        #expect(watermark.finish(15) == 17)
        #expect(watermark.count == 0)
    }

    @Test func anyOrderEndsAtTheLastOffset() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            var watermark = OffsetWatermark()
            let offsets = (0..<200).map { Int64($0 * 2) }
            for offset in offsets { watermark.begin(offset) }
            var stored: [Int64] = []
            for offset in offsets.shuffled(using: &generator) {
                if let next = watermark.finish(offset) { stored.append(next) }
            }
            #expect(stored == stored.sorted())
            #expect(stored.last == 399)
        }
    }

    @Test func offsetsBegunSlightlyOutOfOrderAreKeptInOrder() {
        var watermark = OffsetWatermark()
        for offset in [3, 1, 2, 5, 4] as [Int64] { watermark.begin(offset) }
        #expect(watermark.finish(1) == 2)
        #expect(watermark.finish(3) == nil)
        #expect(watermark.finish(2) == 4)
        #expect(watermark.finish(5) == nil)
        #expect(watermark.finish(4) == 6)
    }
}
