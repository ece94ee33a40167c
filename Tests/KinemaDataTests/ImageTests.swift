import XCTest
@testable import KinemaData

final class ImageTests: XCTestCase {
    /// A w×h image whose pixel (x, y) is (10x + 40y, 7, x·y) (mod 256).
    static func gradient(width: Int, height: Int) -> RGBImage {
        var image = RGBImage(width: width, height: height)
        for y in 0..<height {
            for x in 0..<width {
                image[x, y] = (UInt8((10 * x + 40 * y) % 256), 7, UInt8((x * y) % 256))
            }
        }
        return image
    }

    func testCHWFloatRoundTripIsExact() {
        var pixels = [UInt8](repeating: 0, count: 16 * 16 * 3)
        for i in pixels.indices { pixels[i] = UInt8(i % 256) }
        let image = RGBImage(width: 16, height: 16, pixels: pixels)
        let floats = image.chwFloats()
        XCTAssertEqual(floats.count, 3 * 16 * 16)
        XCTAssertEqual(floats.min()!, -1)
        XCTAssertEqual(floats.max()!, 1)
        // Planar layout: channel c of pixel (x, y) at c·H·W + y·W + x.
        XCTAssertEqual(floats[1 * 256 + 2 * 16 + 3], Float(image[3, 2].1) / 127.5 - 1)
        XCTAssertEqual(RGBImage(chwFloats: floats, width: 16, height: 16), image)
    }

    func testFromFloatsClampsAndRounds() {
        let values: [Float] = [-3, 1.5, 0, .nan, 0.0039, -0.0039] + [Float](repeating: 0, count: 6)
        let image = RGBImage(chwFloats: values, width: 2, height: 2)
        XCTAssertEqual(image[0, 0].0, 0)
        XCTAssertEqual(image[1, 0].0, 255)
        XCTAssertEqual(image[0, 1].0, 128)  // 127.5 rounds away from zero
        XCTAssertEqual(image[1, 1].0, 0)    // NaN
        XCTAssertEqual(image[0, 0].1, 128)  // (0.0039 + 1) · 127.5 = 127.997
        XCTAssertEqual(image[1, 0].1, 127)  // 127.003
    }

    func testHorizontalFlip() {
        let image = Self.gradient(width: 5, height: 3)
        let flipped = image.horizontallyFlipped()
        for y in 0..<3 { for x in 0..<5 { XCTAssertTrue(flipped[x, y] == image[4 - x, y]) } }
        XCTAssertEqual(flipped.horizontallyFlipped(), image)
    }

    func testCenterCropResizeSizes() {
        for (w, h) in [(64, 48), (48, 64), (33, 100), (7, 5), (32, 32), (500, 20)] {
            for size in [1, 8, 16, 32] {
                let out = Self.gradient(width: w, height: h).centerCropResize(to: size)
                XCTAssertEqual(out.width, size, "\(w)×\(h) → \(size)")
                XCTAssertEqual(out.height, size, "\(w)×\(h) → \(size)")
                XCTAssertEqual(out.pixels.count, size * size * 3)
            }
        }
        let same = Self.gradient(width: 9, height: 9)
        XCTAssertEqual(same.centerCropResize(to: 9), same)
    }

    func testShrinkAveragesAreasOfTheCentre() {
        // 8×4 → short side 2: 4×2 of 2×2 block means; the centre crop keeps output columns 1 and 2.
        let out = Self.gradient(width: 8, height: 4).centerCropResize(to: 2)
        XCTAssertEqual(out[0, 0].0, 45)   // x 2…3, y 0…1: 10·2.5 + 40·0.5
        XCTAssertEqual(out[1, 0].0, 65)   // x 4…5
        XCTAssertEqual(out[0, 1].0, 125)  // y 2…3
        XCTAssertEqual(out[1, 1].0, 145)
        XCTAssertEqual(out[1, 1].1, 7)
        XCTAssertEqual(out[0, 0].2, 1)    // x·y over {2,3}×{0,1}: (0 + 0 + 2 + 3) / 4 = 1.25
        XCTAssertEqual(out[1, 1].2, 11)   // x·y over {4,5}×{2,3}: (8 + 10 + 12 + 15) / 4 = 11.25
    }

    func testEnlargeInterpolatesBilinearly() {
        // 2×1 (black, 200) → short side 4: 8×4, crop columns 2…5 sample the source at 0.125, 0.375, 0.625, 0.875.
        let image = RGBImage(width: 2, height: 1, pixels: [0, 0, 0, 200, 200, 200])
        let out = image.centerCropResize(to: 4)
        for y in 0..<4 {
            XCTAssertEqual((0..<4).map { out[$0, y].0 }, [25, 75, 125, 175])
        }
    }

    func testResizeWithNonIntegerRatioPreservesConstantImage() {
        let image = RGBImage(width: 37, height: 23, fill: (90, 180, 30))
        let out = image.centerCropResize(to: 10)
        XCTAssertEqual(out, RGBImage(width: 10, height: 10, fill: (90, 180, 30)))
        XCTAssertEqual(image.resized(width: 50, height: 41), RGBImage(width: 50, height: 41, fill: (90, 180, 30)))
    }

    func testGridLayout() {
        let colours: [(UInt8, UInt8, UInt8)] = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
        let images = colours.map { RGBImage(width: 2, height: 3, fill: $0) }
        let grid = makeGrid(images: images, columns: 2, padding: 1)
        XCTAssertEqual(grid.width, 2 * 2 + 3 * 1)
        XCTAssertEqual(grid.height, 2 * 3 + 3 * 1)
        XCTAssertTrue(grid[0, 0] == (0, 0, 0))
        XCTAssertTrue(grid[1, 1] == (255, 0, 0))
        XCTAssertTrue(grid[2, 3] == (255, 0, 0))
        XCTAssertTrue(grid[3, 1] == (0, 0, 0))      // padding between columns
        XCTAssertTrue(grid[4, 1] == (0, 255, 0))
        XCTAssertTrue(grid[5, 3] == (0, 255, 0))
        XCTAssertTrue(grid[1, 4] == (0, 0, 0))      // padding between rows
        XCTAssertTrue(grid[1, 5] == (0, 0, 255))
        XCTAssertTrue(grid[4, 5] == (0, 0, 0))      // empty cell
        XCTAssertTrue(grid[6, 8] == (0, 0, 0))
        // Fewer images than columns: the grid narrows.
        XCTAssertEqual(makeGrid(images: [images[0]], columns: 8, padding: 2).width, 2 + 4)
        XCTAssertEqual(makeGrid(images: [], columns: 3).pixels.count, 0)
    }
}
