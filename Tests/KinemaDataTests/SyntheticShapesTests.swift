import XCTest
import KinemaTensor
@testable import KinemaData

final class SyntheticShapesTests: XCTestCase {
    func testClassNames() {
        let data = SyntheticShapes()
        XCTAssertEqual(data.numClasses, 12)
        XCTAssertEqual(data.imageSize, 32)
        XCTAssertEqual(data.className(0), "red circle")
        XCTAssertEqual(data.className(5), "green square")
        XCTAssertEqual(data.className(11), "yellow triangle")
        XCTAssertEqual(Set(data.classNames).count, 12)
        XCTAssertEqual(SyntheticShapes.label(shape: .triangle, colour: .blue), 10)
    }

    func testSamplesAreAFunctionOfSeedAndIndex() {
        let data = SyntheticShapes(imageSize: 32, count: 1000, seed: 7)
        let again = SyntheticShapes(imageSize: 32, count: 1000, seed: 7)
        let other = SyntheticShapes(imageSize: 32, count: 1000, seed: 8)
        for index in [0, 1, 500, 999] {
            XCTAssertEqual(data.image(at: index), again.image(at: index))
            XCTAssertEqual(data.sample(index: index).chw, again.sample(index: index).chw)
            XCTAssertNotEqual(data.image(at: index), other.image(at: index))
        }
        XCTAssertNotEqual(data.image(at: 0), data.image(at: 1))
        let sample = data.sample(index: 17)
        XCTAssertEqual(sample.label, data.label(at: 17))
        XCTAssertEqual(sample.chw, data.image(at: 17).chwFloats())

        // Batches hold the same samples, in the order asked, and leave the random stream alone.
        var random = RandomStream(seed: 1)
        let batch = data.batch(indices: [17, 3, 17], random: &random)
        XCTAssertEqual(random, RandomStream(seed: 1))
        XCTAssertEqual(batch.count, 3)
        XCTAssertEqual(batch.shape, [3, 3, 32, 32])
        XCTAssertEqual(Array(batch.images[0..<3072]), sample.chw)
        XCTAssertEqual(Array(batch.images[6144..<9216]), sample.chw)
        XCTAssertEqual(batch.labels, [Int32(sample.label), Int32(data.label(at: 3)), Int32(sample.label)])
    }

    func testLabelsAreSpreadOverAllClasses() {
        let data = SyntheticShapes(count: 6000, seed: 3)
        var counts = [Int](repeating: 0, count: 12)
        for index in 0..<6000 { counts[data.label(at: index)] += 1 }
        XCTAssertTrue(counts.allSatisfy { abs($0 - 500) < 90 }, "\(counts)")
    }

    func testImagesLookRight() {
        for size in [16, 32] {
            for antialias in [true, false] {
                let data = SyntheticShapes(imageSize: size, count: 200, seed: 11, antialias: antialias)
                for index in 0..<200 {
                    let p = data.parameters(at: index)
                    XCTAssertGreaterThanOrEqual(p.extent, 0.5 * Float(size))
                    XCTAssertLessThanOrEqual(p.extent, 0.8 * Float(size))
                    XCTAssertGreaterThanOrEqual(p.centreX - p.extent / 2, 0)
                    XCTAssertLessThanOrEqual(p.centreX + p.extent / 2, Float(size))
                    let image = data.image(at: index)
                    XCTAssertEqual(image.width, size)
                    // The corner farthest from the shape is dark background; a point well inside every shape
                    // (on the axis, a quarter below the centre) has its colour.
                    let corner = image[p.centreX < Float(size) / 2 ? size - 1 : 0, p.centreY < Float(size) / 2 ? size - 1 : 0]
                    let centre = image[Int(p.centreX), Int(p.centreY + p.extent / 4)]
                    XCTAssertLessThan(max(corner.0, corner.1, corner.2), 60)
                    XCTAssertGreaterThan(max(centre.0, centre.1, centre.2), 150, "sample \(index) size \(size)")
                }
            }
        }
    }

    // MARK: Classifier

    func testClassifierIsAccurateOnCleanAndNoisySamples() {
        let data = SyntheticShapes(imageSize: 32, count: 600, seed: 99)
        let images = (0..<600).map(data.image(at:))
        let labels = (0..<600).map(data.label(at:))
        let classifier = SyntheticShapeClassifier()
        let clean = classifier.accuracy(images: images, labels: labels)
        XCTAssertGreaterThanOrEqual(clean, 0.98)

        // Gaussian noise of σ = 0.1 in the model's [-1, 1] range.
        let philox = Philox4x32(seed: 1234)
        let noisy = (0..<600).map { index -> RGBImage in
            var chw = images[index].chwFloats()
            let offset = UInt64(index) << 16
            for i in chw.indices { chw[i] += 0.1 * philox.normal(index: UInt64(i), offset: offset) }
            return RGBImage(chwFloats: chw, width: 32, height: 32)
        }
        let noisyAccuracy = classifier.accuracy(images: noisy, labels: labels)
        XCTAssertGreaterThanOrEqual(noisyAccuracy, 0.90)

        // Uniform noise images: no shape to find, so about chance (1/12) or below.
        var random = RandomStream(seed: 77)
        let noise = (0..<120).map { _ in
            RGBImage(width: 32, height: 32, pixels: (0..<(32 * 32 * 3)).map { _ in UInt8(random.nextInt(below: 256)) })
        }
        let noiseAccuracy = classifier.accuracy(images: noise, labels: (0..<120).map { $0 % 12 })
        XCTAssertLessThanOrEqual(noiseAccuracy, 0.2)

        // At 16×16 too.
        let small = SyntheticShapes(imageSize: 16, count: 300, seed: 5)
        let smallAccuracy = classifier.accuracy(images: (0..<300).map(small.image(at:)), labels: (0..<300).map(small.label(at:)))
        XCTAssertGreaterThanOrEqual(smallAccuracy, 0.9)
        print("classifier accuracy: clean \(clean), σ=0.1 noise \(noisyAccuracy), uniform noise \(noiseAccuracy), 16×16 \(smallAccuracy)")
    }

    /// Generated samples are imperfect: a square whose edges wander by a pixel is still a square (its corners
    /// are filled), and a blob as wide as it is tall with empty corners is a circle, not a square.
    func testClassifierJudgesRaggedShapesByTheirCorners() {
        let classifier = SyntheticShapeClassifier()
        var random = RandomStream(seed: 9)
        func draw(_ inside: (Int, Int) -> Bool) -> RGBImage {
            var image = RGBImage(width: 16, height: 16, fill: (20, 20, 25))
            for y in 0..<16 { for x in 0..<16 where inside(x, y) { image[x, y] = (30, 200, 40) } }
            return image
        }
        for _ in 0..<20 {
            let jitter = (0..<16).map { _ in random.nextInt(below: 3) - 1 }  // each row's edges move by −1…1
            let square = draw { x, y in y >= 3 && y <= 12 && x >= 3 + max(0, jitter[y]) && x <= 12 + min(0, jitter[y]) }
            XCTAssertEqual(classifier.predict(square)?.shape, .square, "\(classifier.features(of: square)!)")
            let disk = draw { x, y in
                let dx = Float(x) - 7.5, dy = Float(y) - 7.5
                return dx * dx + dy * dy <= Float(16 + jitter[y])  // diameter 8, edges wandering
            }
            XCTAssertEqual(classifier.predict(disk)?.shape, .circle, "\(classifier.features(of: disk)!)")
        }
    }

    func testClassifierFindsNothingInAFlatImage() {
        let classifier = SyntheticShapeClassifier()
        XCTAssertNil(classifier.classify(RGBImage(width: 32, height: 32, fill: (20, 20, 25))))
        XCTAssertNil(classifier.classify(RGBImage(width: 32, height: 32, fill: (220, 40, 40))))
        XCTAssertEqual(classifier.accuracy(images: [RGBImage(width: 8, height: 8)], labels: [0]), 0)
    }
}
