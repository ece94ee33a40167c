import Foundation
import KinemaTensor

/// The bundled captioned-video dataset, drawn on the fly: one coloured shape (the synthetic shapes' palette and
/// drawing) moving in a straight line across a dark, noisy background, captioned "a red square moving left".
/// 48 prompts = 3 shapes × 4 colours × 4 directions.
///
/// Prompts in `heldOut` never appear in the data (a video that would draw one draws again), so a model can be
/// scored on combinations it has never seen — `defaultHeldOut` keeps one prompt per direction, each colour, shape
/// and direction still seen in other combinations.
///
/// Video `i` is a pure function of (seed, i): the shape, colour and direction, the shape's size (45–60 % of the
/// side), the distance it travels (60–100 % of the room it has along its direction), where it starts (so the whole
/// path stays inside the frame), the tint and the background; every frame has fresh background noise.
public struct SyntheticVideos: Sendable {
    public enum Direction: Int, CaseIterable, Sendable, CustomStringConvertible {
        case left, right, up, down
        public var description: String {
            switch self {
            case .left: return "left"
            case .right: return "right"
            case .up: return "up"
            case .down: return "down"
            }
        }

        /// The unit step in image coordinates (y grows downwards).
        public var vector: (Float, Float) {
            switch self {
            case .left: return (-1, 0)
            case .right: return (1, 0)
            case .up: return (0, -1)
            case .down: return (0, 1)
            }
        }
    }

    /// What a caption asks for.
    public struct Prompt: Equatable, Hashable, Sendable, CustomStringConvertible {
        public var shape: SyntheticShapes.Shape
        public var colour: SyntheticShapes.Colour
        public var direction: Direction

        public init(shape: SyntheticShapes.Shape, colour: SyntheticShapes.Colour, direction: Direction) {
            (self.shape, self.colour, self.direction) = (shape, colour, direction)
        }

        public var description: String { "a \(colour) \(shape) moving \(direction)" }

        /// Parses a caption of the bundled form ("a red square moving left"; case and extra spaces ignored).
        public init?(caption: String) {
            let words = caption.lowercased().split(whereSeparator: \.isWhitespace).map(String.init)
            guard words.count == 5, words[0] == "a", words[3] == "moving",
                  let colour = SyntheticShapes.Colour.allCases.first(where: { $0.description == words[1] }),
                  let shape = SyntheticShapes.Shape.allCases.first(where: { $0.description == words[2] }),
                  let direction = Direction.allCases.first(where: { $0.description == words[4] }) else { return nil }
            self.init(shape: shape, colour: colour, direction: direction)
        }

        /// Every prompt, in a fixed order (index = (shape · 4 + colour) · 4 + direction).
        public static let all: [Prompt] = SyntheticShapes.Shape.allCases.flatMap { shape in
            SyntheticShapes.Colour.allCases.flatMap { colour in
                Direction.allCases.map { Prompt(shape: shape, colour: colour, direction: $0) }
            }
        }
    }

    /// Four combinations left out of training by default, one per direction.
    public static let defaultHeldOut: Set<Prompt> = [
        Prompt(shape: .triangle, colour: .yellow, direction: .up), Prompt(shape: .circle, colour: .red, direction: .right),
        Prompt(shape: .square, colour: .green, direction: .down), Prompt(shape: .triangle, colour: .blue, direction: .left),
    ]

    public let frames: Int
    public let imageSize: Int
    public let count: Int
    public let seed: UInt64
    public let heldOut: Set<Prompt>
    /// Draws for redrawn videos continue past `count`; the shapes' index range covers them.
    let shapes: SyntheticShapes
    static let maxRedraws = 64

    public init(frames: Int = 8, imageSize: Int = 16, count: Int = 50_000, seed: UInt64 = 0,
                heldOut: Set<Prompt> = []) {
        precondition(frames >= 2, "synthetic videos need at least 2 frames to move, got \(frames)")
        precondition(heldOut.count < Prompt.all.count, "at least one prompt must stay in the data")
        self.frames = frames
        self.imageSize = imageSize
        self.count = count
        self.seed = seed
        self.heldOut = heldOut
        shapes = SyntheticShapes(imageSize: imageSize, count: count * (Self.maxRedraws + 1), seed: seed)
    }

    private static let motionStream: UInt64 = 0x5356_0000_0000_0001

    /// The prompt of video `index` and the shape's parameters in each frame.
    public func parameters(at index: Int) -> (prompt: Prompt, frames: [SyntheticShapes.Parameters]) {
        precondition(index >= 0 && index < count, "video index \(index) out of range 0..<\(count)")
        for redraw in 0...Self.maxRedraws {
            let drawn = draw(index + redraw * count)
            if !heldOut.contains(drawn.prompt) { return drawn }
        }
        preconditionFailure("video \(index): \(Self.maxRedraws) draws in a row were held-out prompts")
    }

    /// The video drawn with counter `index` (no hold-out).
    private func draw(_ index: Int) -> (prompt: Prompt, frames: [SyntheticShapes.Parameters]) {
        var first = shapes.parameters(at: index)
        let philox = Philox4x32(seed: seed)
        let draw = philox.block(counter: UInt64(index), stream: Self.motionStream)
        let direction = Direction(rawValue: Int((UInt64(draw.0) * 4) >> 32))!
        let size = Float(imageSize)
        first.extent = size * (0.45 + 0.15 * Philox4x32.unitFloat(draw.1))
        let half = first.extent / 2, room = size - first.extent
        let travel = room * (0.6 + 0.4 * Philox4x32.unitFloat(draw.2))
        let (dx, dy) = direction.vector
        // Start where the whole path fits: along the motion, `travel` before the far edge; across it, anywhere.
        let across = half + room * Philox4x32.unitFloat(draw.3)
        let along = half + (room - travel) * Philox4x32.unitFloat(draw.1 ^ draw.2)
        let startX = dx == 0 ? across : (dx > 0 ? along : size - along)
        let startY = dy == 0 ? across : (dy > 0 ? along : size - along)
        let prompt = Prompt(shape: SyntheticShapes.shape(ofLabel: first.label),
                            colour: SyntheticShapes.colour(ofLabel: first.label), direction: direction)
        let perFrame = (0..<frames).map { f -> SyntheticShapes.Parameters in
            var p = first
            let progress = travel * Float(f) / Float(frames - 1)
            p.centreX = startX + dx * progress
            p.centreY = startY + dy * progress
            return p
        }
        return (prompt, perFrame)
    }

    public func caption(at index: Int) -> String { parameters(at: index).prompt.description }

    /// Video `index` as 8-bit frames.
    public func video(at index: Int) -> [RGBImage] {
        parameters(at: index).frames.enumerated().map { f, p in
            shapes.render(p, noiseIndex: UInt64(index) * UInt64(frames) + UInt64(f))
        }
    }

    /// The videos at `indices` as floats in [-1, 1], [B, 3, F, S, S] row-major, with their captions.
    public func batch(indices: [Int]) -> (videos: [Float], shape: [Int], captions: [String]) {
        let frameSize = imageSize * imageSize, videoSize = 3 * frames * frameSize
        var values = [Float](repeating: 0, count: indices.count * videoSize)
        values.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            DispatchQueue.concurrentPerform(iterations: indices.count) { slot in
                for (f, image) in video(at: indices[slot]).enumerated() {
                    let chw = image.chwFloats()
                    for c in 0..<3 {
                        let target = base + slot * videoSize + (c * frames + f) * frameSize
                        for i in 0..<frameSize { target[i] = chw[c * frameSize + i] }
                    }
                }
            }
        }
        return (values, [indices.count, 3, frames, imageSize, imageSize], indices.map(caption))
    }
}

/// Scores generated clips against their prompts: the colour and shape of the object (the synthetic shapes'
/// classifier, by majority over the frames) and the direction it moves (the sign of the largest displacement of
/// its centroid — the pixels far from the background — between the first and the last third of the clip).
public struct SyntheticVideoClassifier: Sendable {
    public let frameClassifier: SyntheticShapeClassifier

    public init(frameClassifier: SyntheticShapeClassifier = SyntheticShapeClassifier()) {
        self.frameClassifier = frameClassifier
    }

    public func predict(_ frames: [RGBImage]) -> SyntheticVideos.Prompt? {
        let labels = frames.compactMap { frameClassifier.predict($0) }
        guard !labels.isEmpty, let direction = direction(frames) else { return nil }
        var votes: [String: (Int, SyntheticShapes.Shape, SyntheticShapes.Colour)] = [:]
        for (shape, colour) in labels {
            let key = "\(shape) \(colour)"
            votes[key] = ((votes[key]?.0 ?? 0) + 1, shape, colour)
        }
        let best = votes.values.max { $0.0 < $1.0 }!
        return SyntheticVideos.Prompt(shape: best.1, colour: best.2, direction: direction)
    }

    /// The direction of motion, or nil when no object is found.
    public func direction(_ frames: [RGBImage]) -> SyntheticVideos.Direction? {
        let centroids = frames.map(centroid)
        let third = max(1, frames.count / 3)
        let early = centroids.prefix(third).compactMap { $0 }, late = centroids.suffix(third).compactMap { $0 }
        guard !early.isEmpty, !late.isEmpty else { return nil }
        func mean(_ points: [(Float, Float)]) -> (Float, Float) {
            (points.map(\.0).reduce(0, +) / Float(points.count), points.map(\.1).reduce(0, +) / Float(points.count))
        }
        let (x0, y0) = mean(early), (x1, y1) = mean(late)
        let dx = x1 - x0, dy = y1 - y0
        if abs(dx) >= abs(dy) { return dx < 0 ? .left : .right }
        return dy < 0 ? .up : .down
    }

    /// The mean position of the pixels that stand out from the frame's median grey by more than the classifier's
    /// contrast, weighted by how far they stand out.
    func centroid(_ image: RGBImage) -> (Float, Float)? {
        let n = image.width * image.height
        let pixels = image.pixels
        var levels = [Float](repeating: 0, count: n)
        for i in 0..<n {
            let sum = Float(pixels[3 * i]) + Float(pixels[3 * i + 1]) + Float(pixels[3 * i + 2])
            levels[i] = sum / 3
        }
        levels.sort()
        let background = levels[n / 2]
        var sum: Float = 0, sx: Float = 0, sy: Float = 0
        for y in 0..<image.height {
            for x in 0..<image.width {
                let (r, g, b) = image[x, y]
                let contrast = max(abs(Float(r) - background), abs(Float(g) - background), abs(Float(b) - background))
                guard contrast > frameClassifier.minimumContrast else { continue }
                sum += contrast
                sx += contrast * (Float(x) + 0.5)
                sy += contrast * (Float(y) + 0.5)
            }
        }
        return sum > 0 ? (sx / sum, sy / sum) : nil
    }
}

/// Captioned videos for text-to-video training: batches of [B, 3, F, S, S] floats in [-1, 1] with their captions.
public protocol VideoDataSource {
    var count: Int { get }
    var frames: Int { get }
    var imageSize: Int { get }
    /// The samples at `indices`; `random` drives the choices a sample may involve (a temporal crop, the
    /// replacement of an unreadable video), so a run is reproducible from the stream's state.
    func batch(indices: [Int], random: inout RandomStream) -> (videos: [Float], shape: [Int], captions: [String])
    /// Captions the data leaves out on purpose (to score a model on them), sorted.
    var heldOutCaptions: [String] { get }
    /// Bucketed data: the indices that may share a batch, with their batch size (one group per bucket); nil when
    /// any may.
    var sampleGroups: [SampleGroup]? { get }
    /// Every clip shape a batch can have.
    var clipShapes: [VideoBucket] { get }
}

extension VideoDataSource {
    public var sampleGroups: [SampleGroup]? { nil }
    public var clipShapes: [VideoBucket] { [VideoBucket(height: imageSize, width: imageSize, frames: frames)] }
}

extension SyntheticVideos: VideoDataSource {
    public var heldOutCaptions: [String] { heldOut.map(\.description).sorted() }

    /// `VideoDataSource` conformance: the same as `batch(indices:)` (nothing random to choose).
    public func batch(indices: [Int], random: inout RandomStream) -> (videos: [Float], shape: [Int], captions: [String]) {
        batch(indices: indices)
    }
}
