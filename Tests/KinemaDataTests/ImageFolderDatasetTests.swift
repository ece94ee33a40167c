import XCTest
import KinemaTensor
@testable import KinemaData

final class ImageFolderDatasetTests: XCTestCase {
    final class Reports: @unchecked Sendable {
        private let lock = NSLock()
        private var messages: [String] = []
        func add(_ message: String) { lock.lock(); messages.append(message); lock.unlock() }
        var all: [String] { lock.lock(); defer { lock.unlock() }; return messages }
    }

    /// root/cats: 3 PNGs (red-ish), root/dogs: 2 PNGs (blue-ish) + a corrupt "bad.png", plus non-images.
    func makeFolder() throws -> String {
        let root = try makeTemporaryDirectory(self) + "/root"
        let fileManager = FileManager.default
        for name in ["dogs", "cats"] { try fileManager.createDirectory(atPath: root + "/" + name, withIntermediateDirectories: true) }
        for i in 0..<3 {
            var image = RGBImage(width: 20, height: 12, fill: (200, UInt8(10 * i), 0))
            for y in 0..<12 { image[6, y] = (0, 255, 0); image[7, y] = (0, 255, 0) }  // left of centre: shows flips
            try image.write(toFile: root + "/cats/c\(i).png")
        }
        for i in 0..<2 {
            var image = RGBImage(width: 12, height: 16, fill: (0, UInt8(10 * i), 200))
            image[0, 8] = (0, 255, 0)
            try image.write(toFile: root + "/dogs/d\(i).PNG")
        }
        _ = fileManager.createFile(atPath: root + "/dogs/zz-bad.png", contents: Data((0..<300).map { UInt8(($0 * 91 + 7) % 256) }))
        _ = fileManager.createFile(atPath: root + "/dogs/notes.txt", contents: Data("not an image".utf8))
        _ = fileManager.createFile(atPath: root + "/README", contents: Data())
        return root
    }

    func testIndexesClassesAndFilesInSortedOrder() throws {
        let root = try makeFolder()
        let dataset = try ImageFolderDataset(root: root, imageSize: 8)
        XCTAssertEqual(dataset.classNames, ["cats", "dogs"])
        XCTAssertEqual(dataset.numClasses, 2)
        XCTAssertEqual(dataset.count, 6)
        XCTAssertEqual(dataset.labels, [0, 0, 0, 1, 1, 1])
        XCTAssertEqual(dataset.paths.map { ($0 as NSString).lastPathComponent },
                       ["c0.png", "c1.png", "c2.png", "d0.PNG", "d1.PNG", "zz-bad.png"])
        let sample = try dataset.sample(at: 4, flip: false)
        XCTAssertEqual(sample.label, 1)
        XCTAssertEqual(sample.chw.count, 3 * 8 * 8)
        let image = RGBImage(chwFloats: sample.chw, width: 8, height: 8)
        XCTAssertEqual(image[4, 0].2, 200)
        XCTAssertEqual(image[4, 0].1, 10)
        let flipped = RGBImage(chwFloats: try dataset.sample(at: 4, flip: true).chw, width: 8, height: 8)
        XCTAssertEqual(flipped, image.horizontallyFlipped())
    }

    func testCorruptFileIsReportedOnceAndReplaced() throws {
        let root = try makeFolder()
        let reports = Reports()
        let dataset = try ImageFolderDataset(root: root, imageSize: 8, report: reports.add)
        XCTAssertThrowsError(try dataset.sample(at: 5, flip: false))

        var random = RandomStream(seed: 3)
        let batch = dataset.loadBatch(indices: [0, 1, 2, 3, 4, 5], random: &random)
        XCTAssertEqual(batch.count, 6, "the bad file is replaced, so the batch is full")
        XCTAssertEqual(batch.images.count, 6 * 3 * 8 * 8)
        XCTAssertEqual(Array(batch.labels.prefix(5)), [0, 0, 0, 1, 1])
        XCTAssertEqual(reports.all.count, 1)
        XCTAssertTrue(reports.all[0].hasPrefix("skipping unreadable image \(root)/dogs/zz-bad.png: "), reports.all[0])
        XCTAssertEqual(Array(dataset.unreadable.keys), [root + "/dogs/zz-bad.png"])

        // Asked for again (even several times in one batch): replaced, not reported again.
        let again = dataset.loadBatch(indices: [5, 5, 5, 0], random: &random)
        XCTAssertEqual(again.count, 4)
        XCTAssertEqual(reports.all.count, 1)

        // The same stream state gives the same batch (flips and replacements).
        var first = RandomStream(seed: 11), second = RandomStream(seed: 11)
        let a = dataset.batch(indices: [5, 2, 3, 1], random: &first)
        let b = dataset.batch(indices: [5, 2, 3, 1], random: &second)
        XCTAssertEqual(a, b)
        XCTAssertEqual(first, second)
    }

    func testFlipsAboutHalfTheImages() throws {
        let root = try makeFolder()
        let dataset = try ImageFolderDataset(root: root, imageSize: 8, report: { _ in })
        var random = RandomStream(seed: 5)
        let batch = dataset.loadBatch(indices: Array(repeating: 0, count: 40), random: &random)
        let unflipped = try dataset.image(at: 0)
        let flipped = unflipped.horizontallyFlipped()
        XCTAssertNotEqual(unflipped, flipped)
        var flips = 0
        for i in 0..<batch.count {
            let image = batch.image(at: i)
            XCTAssertTrue(image == unflipped || image == flipped)
            if image == flipped { flips += 1 }
        }
        XCTAssertGreaterThan(flips, 8)
        XCTAssertLessThan(flips, 32)
    }

    func testMissingOrEmptyRootIsAClearError() throws {
        let directory = try makeTemporaryDirectory(self)
        let missing = directory + "/no-such-dataset"
        XCTAssertThrowsError(try ImageFolderDataset(root: missing, imageSize: 32)) { error in
            XCTAssertEqual(error as? DataError, .rootNotFound(path: missing))
            XCTAssertTrue("\(error)".contains(missing), "\(error)")
        }
        XCTAssertThrowsError(try ImageFolderDataset(root: directory, imageSize: 32)) { error in
            XCTAssertTrue("\(error)".contains("no class subfolders"), "\(error)")
        }
        try FileManager.default.createDirectory(atPath: directory + "/empty-class", withIntermediateDirectories: true)
        XCTAssertThrowsError(try ImageFolderDataset(root: directory, imageSize: 32)) { error in
            XCTAssertTrue("\(error)".contains("hold no images"), "\(error)")
        }
    }
}
