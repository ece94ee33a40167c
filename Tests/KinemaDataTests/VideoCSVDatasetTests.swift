import Foundation
import KinemaData
import KinemaTensor
import KinemaTestSupport
import XCTest

/// A CSV of captioned videos, Open-Sora's layout: quoted captions with commas, relative paths, a frame interval,
/// and a corrupt or too-short video reported with its path and replaced.
final class VideoCSVDatasetTests: XCTestCase {
    /// Writes three synthetic clips as mp4 (one of 3 frames only), a corrupt file and the CSV listing them.
    static func makeFolder() throws -> (folder: URL, csv: URL, source: SyntheticVideos) {
        let folder = Fixtures.temporaryDirectory("kinema-csv")
        let source = SyntheticVideos(frames: 9, imageSize: 16, count: 10, seed: 2)
        for index in 0..<2 {
            try FFmpeg.writeVideo(source.video(at: index), fps: 8, toPath: folder.appendingPathComponent("v\(index).mp4").path)
        }
        try FFmpeg.writeVideo(Array(source.video(at: 2).prefix(3)), fps: 8,
                              toPath: folder.appendingPathComponent("short.mp4").path)
        try Data("not a video".utf8).write(to: folder.appendingPathComponent("broken.mp4"))
        let csv = folder.appendingPathComponent("videos.csv")
        let lines = [
            "path,text,num_frames,fps",
            "v0.mp4,\"\(source.caption(at: 0)), with a comma and \"\"quotes\"\"\",9,8",
            "v1.mp4,\(source.caption(at: 1)),,8",
            "broken.mp4,\"a broken\nvideo\",,",
            "short.mp4,too short,,",
            "tiny.mp4,known to be too short,2,8",
        ]
        let text = lines.joined(separator: "\r\n") + "\r\n"
        try Data(text.utf8).write(to: csv)
        return (folder, csv, source)
    }

    func testReadsRowsDecodesClipsAndSkipsBadVideos() throws {
        let (folder, csv, source) = try Self.makeFolder()
        var reports: [String] = []
        let data = try VideoCSVDataset(csv: csv.path, frames: 4, frameInterval: 2, imageSize: 8) { reports.append($0) }
        XCTAssertEqual(data.count, 4, "the row whose num_frames is below the span is left out up front")
        XCTAssertEqual(data.rows[0].text, "\(source.caption(at: 0)), with a comma and \"quotes\"")
        XCTAssertEqual(data.rows[0].path, folder.appendingPathComponent("v0.mp4").path)
        XCTAssertEqual(data.rows[0].numFrames, 9)
        XCTAssertEqual(data.rows[2].text, "a broken\nvideo")
        XCTAssertTrue(reports.contains { $0.contains("shorter than 7 frames") }, "\(reports)")
        // Frames 1, 3, 5, 7 of v1, resized to 8 × 8 — close to the drawn frames (H.264 is lossy).
        let clip = try data.clip(at: 1, start: 1)
        XCTAssertEqual(clip.count, 4)
        let expected = source.video(at: 1)[5].centerCropResize(to: 8)
        let error = zip(clip[2].pixels, expected.pixels).map { abs(Double($0) - Double($1)) }.reduce(0, +)
            / Double(expected.pixels.count)
        XCTAssertLessThan(error, 14)
        // Every index of a batch ends up a real clip: the broken and the short video are reported and replaced.
        var random = RandomStream(seed: 3)
        let batch = data.batch(indices: [0, 1, 2, 3], random: &random)
        XCTAssertEqual(batch.shape, [4, 3, 4, 8, 8])
        XCTAssertTrue(batch.captions.allSatisfy { $0 == data.rows[0].text || $0 == data.rows[1].text }, "\(batch.captions)")
        XCTAssertTrue(reports.contains { $0.contains("broken.mp4") }, "\(reports)")
        XCTAssertTrue(reports.contains { $0.contains("short.mp4") && $0.contains("fewer than the 7") }, "\(reports)")
    }

    func testRejectsACSVWithoutPathAndText() throws {
        let csv = Fixtures.temporaryDirectory("kinema-csv-bad").appendingPathComponent("bad.csv")
        try Data("file,caption\nx.mp4,hello\n".utf8).write(to: csv)
        XCTAssertThrowsError(try VideoCSVDataset(csv: csv.path, frames: 2, imageSize: 8)) { error in
            XCTAssertTrue("\(error)".contains("`path` and `text`"), "\(error)")
        }
    }
}
