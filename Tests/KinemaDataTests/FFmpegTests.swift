import XCTest
@testable import KinemaData

final class FFmpegTests: XCTestCase {
    func testPNGRoundTripIsExact() throws {
        let directory = try makeTemporaryDirectory(self)
        var pixels = [UInt8](repeating: 0, count: 13 * 7 * 3)
        for i in pixels.indices { pixels[i] = UInt8((i * 37 + i / 5) % 256) }
        let image = RGBImage(width: 13, height: 7, pixels: pixels)
        let path = directory + "/odd size: with colon.png"
        try image.write(toFile: path)
        XCTAssertEqual(try RGBImage(contentsOfFile: path), image)
    }

    func testJPEGDecodes() throws {
        let directory = try makeTemporaryDirectory(self)
        var image = RGBImage(width: 40, height: 24)
        for y in 0..<24 { for x in 0..<40 { image[x, y] = (UInt8(x * 6), UInt8(y * 10), 128) } }
        try image.write(toFile: directory + "/source.png")
        try runFFmpeg(["-i", directory + "/source.png", "-q:v", "2", directory + "/photo.JPG"])
        let decoded = try RGBImage(contentsOfFile: directory + "/photo.JPG")
        XCTAssertEqual(decoded.width, 40)
        XCTAssertEqual(decoded.height, 24)
        let meanError = zip(decoded.pixels, image.pixels).map { abs(Double($0) - Double($1)) }.reduce(0, +)
            / Double(image.pixels.count)
        XCTAssertLessThan(meanError, 6, "JPEG should decode close to its source")
    }

    func testGreyAndAlphaImagesDecodeToRGB() throws {
        let directory = try makeTemporaryDirectory(self)
        // Fixtures from raw bytes, so no colour-space conversion happens on the way in.
        let grey = (0..<15).map { UInt8($0 * 17) }
        _ = FileManager.default.createFile(atPath: directory + "/grey.raw", contents: Data(grey))
        try runFFmpeg(["-f", "rawvideo", "-pix_fmt", "gray", "-s", "5x3", "-i", directory + "/grey.raw", directory + "/grey.png"])
        XCTAssertEqual(try RGBImage(contentsOfFile: directory + "/grey.png").pixels, grey.flatMap { [$0, $0, $0] })
        let rgba = (0..<24).flatMap { i -> [UInt8] in [UInt8(i * 10), 128, 200, UInt8(i * 5)] }
        _ = FileManager.default.createFile(atPath: directory + "/alpha.raw", contents: Data(rgba))
        try runFFmpeg(["-f", "rawvideo", "-pix_fmt", "rgba", "-s", "4x6", "-i", directory + "/alpha.raw", directory + "/alpha.png"])
        let decoded = try RGBImage(contentsOfFile: directory + "/alpha.png")
        XCTAssertEqual(decoded.width, 4)
        XCTAssertEqual(decoded.height, 6)
        XCTAssertEqual(decoded.pixels, (0..<24).flatMap { i -> [UInt8] in [UInt8(i * 10), 128, 200] }, "alpha is dropped")
    }

    func testEncodeErrorNamesThePathAndDoesNotKillTheProcess() throws {
        // Larger than a pipe buffer, so ffmpeg quits while stdin still has data (EPIPE, not SIGPIPE).
        let image = RGBImage(width: 300, height: 300, fill: (1, 2, 3))
        let path = "/nonexistent-kinema-folder/out.png"
        XCTAssertThrowsError(try image.write(toFile: path)) { error in
            guard case DataError.encodeFailed(let failedPath, let reason) = error else {
                return XCTFail("expected encodeFailed, got \(error)")
            }
            XCTAssertEqual(failedPath, path)
            XCTAssertFalse(reason.isEmpty)
        }
    }

    func testDecodeErrorsNameThePath() throws {
        let directory = try makeTemporaryDirectory(self)
        let missing = directory + "/nope.png"
        XCTAssertThrowsError(try RGBImage(contentsOfFile: missing)) { error in
            XCTAssertEqual(error as? DataError, .fileNotFound(path: missing))
            XCTAssertTrue("\(error)".contains(missing))
        }
        let corrupt = directory + "/corrupt.png"
        _ = FileManager.default.createFile(atPath: corrupt, contents: Data((0..<500).map { UInt8(($0 * 73 + 11) % 256) }))
        XCTAssertThrowsError(try RGBImage(contentsOfFile: corrupt)) { error in
            guard case DataError.decodeFailed(let path, let reason) = error else {
                return XCTFail("expected decodeFailed, got \(error)")
            }
            XCTAssertEqual(path, corrupt)
            XCTAssertFalse(reason.isEmpty)
            XCTAssertTrue("\(error)".contains(corrupt))
        }
    }

    func testMissingFFmpegSaysHowToInstall() {
        XCTAssertThrowsError(try FFmpeg.executable(environment: ["PATH": "/nonexistent"])) { error in
            XCTAssertTrue("\(error)".contains("apt-get install ffmpeg"), "\(error)")
        }
        XCTAssertThrowsError(try FFmpeg.executable(environment: ["KINEMA_FFMPEG": "/no/such/ffmpeg", "PATH": "/usr/bin"])) {
            XCTAssertTrue("\($0)".contains("/no/such/ffmpeg"), "\($0)")
        }
        XCTAssertEqual(try FFmpeg.executable(environment: ["PATH": "/nonexistent:/usr/bin"]), "/usr/bin/ffmpeg")
    }
}
