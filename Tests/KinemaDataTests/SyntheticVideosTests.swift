import KinemaData
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
