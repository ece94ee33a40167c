import Foundation
import KinemaData
import KinemaTestSupport
import XCTest

/// The bundled captioned videos: deterministic, every prompt reachable, the whole path inside the frame, and the
/// classifier that scores generated clips right on the real ones.
final class SyntheticVideosTests: XCTestCase {
    func testVideosAreDeterministicAndCaptioned() {
        let data = SyntheticVideos(frames: 8, imageSize: 16, count: 500, seed: 3)
        XCTAssertEqual(data.video(at: 7), data.video(at: 7))
        XCTAssertNotEqual(data.video(at: 7)[0], data.video(at: 7)[1], "the shape moves and the noise is per frame")
        let prompts = Set((0..<500).map { data.parameters(at: $0).prompt })
        XCTAssertEqual(prompts.count, 48, "every shape × colour × direction appears")
        XCTAssertEqual(SyntheticVideos.Prompt.all.count, 48)
        for index in 0..<500 {
            let (prompt, frames) = data.parameters(at: index)
            XCTAssertEqual(SyntheticVideos.Prompt(caption: data.caption(at: index)), prompt)
            for p in frames {
                XCTAssertGreaterThanOrEqual(min(p.centreX, p.centreY) - p.extent / 2, -1e-4)
                XCTAssertLessThanOrEqual(max(p.centreX, p.centreY) + p.extent / 2, 16 + 1e-4)
            }
        }
        XCTAssertNil(SyntheticVideos.Prompt(caption: "a purple square moving left"))
        XCTAssertEqual(SyntheticVideos.Prompt(caption: " A Red  SQUARE moving Left ")?.description, "a red square moving left")
        let batch = data.batch(indices: [3, 4])
        XCTAssertEqual(batch.shape, [2, 3, 8, 16, 16])
        XCTAssertEqual(batch.captions, [data.caption(at: 3), data.caption(at: 4)])
        XCTAssertTrue(batch.videos.allSatisfy { $0 >= -1 && $0 <= 1 })
        // Channel 0, frame 2 of the second video is that frame's red plane.
        let frame = data.video(at: 4)[2].chwFloats()
        XCTAssertEqual(Array(batch.videos[(3 * 8 * 256 + 2 * 256)..<(3 * 8 * 256 + 3 * 256)]), Array(frame[0..<256]))
    }

    /// Held-out prompts never appear; the other videos are exactly those of the data without a hold-out.
    func testHeldOutPromptsNeverAppear() {
        let plain = SyntheticVideos(frames: 4, imageSize: 16, count: 400, seed: 5)
        let data = SyntheticVideos(frames: 4, imageSize: 16, count: 400, seed: 5, heldOut: SyntheticVideos.defaultHeldOut)
        XCTAssertEqual(data.heldOutCaptions.count, 4)
        var kept = 0
        for index in 0..<400 {
            let prompt = data.parameters(at: index).prompt
            XCTAssertFalse(SyntheticVideos.defaultHeldOut.contains(prompt))
            if !SyntheticVideos.defaultHeldOut.contains(plain.parameters(at: index).prompt) {
                XCTAssertEqual(data.video(at: index), plain.video(at: index))
                kept += 1
            }
        }
        XCTAssertGreaterThan(kept, 300)
        XCTAssertEqual(Set((0..<400).map { data.parameters(at: $0).prompt }).count, 44)
    }

    func testClassifierReadsTheRealVideos() {
        let data = SyntheticVideos(frames: 8, imageSize: 16, count: 300, seed: 11)
        let classifier = SyntheticVideoClassifier()
        var right = 0, rightDirection = 0
        for index in 0..<300 {
            let truth = data.parameters(at: index).prompt
            let frames = data.video(at: index)
            if classifier.predict(frames) == truth { right += 1 }
            if classifier.direction(frames) == truth.direction { rightDirection += 1 }
        }
        XCTAssertGreaterThanOrEqual(rightDirection, 297, "direction right on \(rightDirection)/300")
        XCTAssertGreaterThanOrEqual(right, 280, "prompt right on \(right)/300")
    }
}

/// Clips through ffmpeg: H.264 mp4 and GIF out, every frame back in, close to what was written.
final class VideoFileTests: XCTestCase {
    func testWriteAndDecodeVideo() throws {
        let frames = SyntheticVideos(frames: 6, imageSize: 16, count: 10, seed: 1).video(at: 2)
        let folder = Fixtures.temporaryDirectory("kinema-video")
        for name in ["clip.mp4", "clip.gif"] {
            let path = folder.appendingPathComponent(name).path
            try FFmpeg.writeVideo(frames, fps: 8, scale: 4, toPath: path)
            let decoded = try FFmpeg.decodeVideo(atPath: path)
            XCTAssertEqual(decoded.count, 6, name)
            XCTAssertEqual(decoded[0].width, 64, name)
            // Back to 16 × 16 by picking each 4 × 4 block's centre: close to the original despite the codec.
            for (original, frame) in zip(frames, decoded) {
                var error = 0.0
                for y in 0..<16 {
                    for x in 0..<16 {
                        let (a, b) = (original[x, y], frame[4 * x + 2, 4 * y + 2])
                        error += abs(Double(a.0) - Double(b.0)) + abs(Double(a.1) - Double(b.1))
                            + abs(Double(a.2) - Double(b.2))
                    }
                }
                XCTAssertLessThan(error / (16 * 16 * 3), 12, "\(name): mean absolute error per channel")
            }
        }
        XCTAssertEqual(try FFmpeg.decodeVideo(atPath: folder.appendingPathComponent("clip.mp4").path, maxFrames: 2).count, 2)
        XCTAssertThrowsError(try FFmpeg.decodeVideo(atPath: folder.appendingPathComponent("missing.mp4").path))
        let corrupt = folder.appendingPathComponent("corrupt.mp4")
        try Data("not a video".utf8).write(to: corrupt)
        XCTAssertThrowsError(try FFmpeg.decodeVideo(atPath: corrupt.path)) { error in
            XCTAssertTrue("\(error)".contains(corrupt.path), "\(error)")
        }
    }
}
