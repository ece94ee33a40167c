import Foundation
import KinemaTensor

/// The bundled dataset, drawn on the fly (nothing to download): one coloured shape on a dark, slightly noisy
/// background. Twelve classes = 3 shapes × 4 colours; label = shape × 4 + colour, so 0 is "red circle",
/// 1 "green circle", …, 11 "yellow triangle".
///
/// Sample `i` is a pure function of (seed, i) through Philox: its label, the shape's size (50–80 % of the image
/// side), its position (anywhere it fits), a slight tint of its colour, the background level and the background
/// noise. Batches never flip: every shape is left–right symmetric, so a flip would add nothing (and a flip would
/// not change the label either).
public struct SyntheticShapes: DataSource, Sendable {
    public enum Shape: Int, CaseIterable, Sendable, CustomStringConvertible {
        case circle, square, triangle
        public var description: String {
            switch self {
            case .circle: return "circle"
            case .square: return "square"
            case .triangle: return "triangle"
            }
        }
    }

    public enum Colour: Int, CaseIterable, Sendable, CustomStringConvertible {
        case red, green, blue, yellow
        public var description: String {
            switch self {
            case .red: return "red"
            case .green: return "green"
            case .blue: return "blue"
            case .yellow: return "yellow"
            }
        }

        /// The palette colour (0–255 per channel) before the per-sample tint.
        public var rgb: (Float, Float, Float) {
            switch self {
            case .red: return (220, 45, 45)
            case .green: return (45, 190, 70)
            case .blue: return (55, 95, 235)
            case .yellow: return (230, 205, 50)
            }
        }
    }

    public static let classCount = Shape.allCases.count * Colour.allCases.count

    public static func label(shape: Shape, colour: Colour) -> Int { shape.rawValue * Colour.allCases.count + colour.rawValue }
    public static func shape(ofLabel label: Int) -> Shape { Shape(rawValue: label / Colour.allCases.count)! }
    public static func colour(ofLabel label: Int) -> Colour { Colour(rawValue: label % Colour.allCases.count)! }
    /// "red circle", "blue triangle", …
    public static func className(_ label: Int) -> String {
        precondition(label >= 0 && label < classCount, "label \(label) out of range 0..<\(classCount)")
        return "\(colour(ofLabel: label)) \(shape(ofLabel: label))"
    }

    public let imageSize: Int
    public let count: Int
    public let seed: UInt64
    /// Draw edges with 4×4 supersampling (on by default); off, each pixel is inside or outside.
    public let antialias: Bool

    public init(imageSize: Int = 32, count: Int = 50_000, seed: UInt64 = 0, antialias: Bool = true) {
        precondition(imageSize >= 8 && imageSize <= 4096, "synthetic shapes need images of 8×8 to 4096×4096, got \(imageSize)")
        precondition(count > 0, "dataset must hold at least one sample")
        self.imageSize = imageSize
        self.count = count
        self.seed = seed
        self.antialias = antialias
    }

    public var numClasses: Int { Self.classCount }
    public var classNames: [String] { (0..<Self.classCount).map(Self.className) }
    public func className(_ label: Int) -> String { Self.className(label) }

    /// Everything that defines one sample, drawn from (seed, index).
    public struct Parameters: Equatable, Sendable {
        public var label: Int
        /// Side of the shape's bounding box, in pixels.
        public var extent: Float
        /// Centre of the bounding box, in pixels (pixel (x, y) covers [x, x+1) × [y, y+1)).
        public var centreX: Float
        public var centreY: Float
        /// The shape's colour after the tint, 0–255.
        public var colour: (Float, Float, Float)
        /// Background grey level before noise, 0–255.
        public var background: Float

        public static func == (a: Parameters, b: Parameters) -> Bool {
            a.label == b.label && a.extent == b.extent && a.centreX == b.centreX && a.centreY == b.centreY
                && a.colour == b.colour && a.background == b.background
        }
    }

    // Philox streams (key = seed, counter = sample index) of the dataset's draws.
    private static let parameterStream: UInt64 = 0x5348_0000_0000_0001
    private static let tintStream: UInt64 = 0x5348_0000_0000_0002
    private static let noiseStream: UInt64 = 0x5348_0000_0000_0003
    private static let backgroundStream: UInt64 = 0x5348_0000_0000_0004
    /// ± amplitude of the uniform per-channel background noise, 0–255.
    static let noiseAmplitude: Float = 6

    public func parameters(at index: Int) -> Parameters {
        precondition(index >= 0 && index < count, "sample index \(index) out of range 0..<\(count)")
        let philox = Philox4x32(seed: seed)
        let draw = philox.block(counter: UInt64(index), stream: Self.parameterStream)
        let tint = philox.block(counter: UInt64(index), stream: Self.tintStream)
        let label = Int((UInt64(draw.0) * UInt64(Self.classCount)) >> 32)
        let size = Float(imageSize)
        let extent = size * (0.5 + 0.3 * Philox4x32.unitFloat(draw.1))
        // The centre ranges over every position that keeps the shape inside the image.
        let half = extent / 2
        let centreX = half + (size - extent) * Philox4x32.unitFloat(draw.2)
        let centreY = half + (size - extent) * Philox4x32.unitFloat(draw.3)
        let base = Self.colour(ofLabel: label).rgb
        let brightness = 0.85 + 0.15 * Philox4x32.unitFloat(tint.0)
        func jitter(_ bits: UInt32) -> Float { 20 * (Philox4x32.unitFloat(bits) - 0.5) }
        let colour = (min(255, max(0, base.0 * brightness + jitter(tint.1))),
                      min(255, max(0, base.1 * brightness + jitter(tint.2))),
                      min(255, max(0, base.2 * brightness + jitter(tint.3))))
        let background = 12 + 24 * Philox4x32.unitFloat(philox.block(counter: UInt64(index), stream: Self.backgroundStream).0)
        return Parameters(label: label, extent: extent, centreX: centreX, centreY: centreY, colour: colour,
                          background: background)
    }

    public func label(at index: Int) -> Int { parameters(at: index).label }

    /// Sample `index` as an 8-bit image.
    public func image(at index: Int) -> RGBImage {
        render(parameters(at: index), noiseIndex: UInt64(index))
    }

    /// Sample `index` as CHW floats in [-1, 1] with its label.
    public func sample(index: Int) -> (chw: [Float], label: Int) {
        let parameters = parameters(at: index)
        return (render(parameters, noiseIndex: UInt64(index)).chwFloats(), parameters.label)
    }

    /// The samples at `indices`, rendered in parallel.
    public func batch(indices: [Int]) -> Batch {
        let n = 3 * imageSize * imageSize
        var images = [Float](repeating: 0, count: indices.count * n)
        var labels = [Int32](repeating: 0, count: indices.count)
        images.withUnsafeMutableBufferPointer { imageBuffer in
            labels.withUnsafeMutableBufferPointer { labelBuffer in
                let imageBase = imageBuffer.baseAddress, labelBase = labelBuffer.baseAddress
                DispatchQueue.concurrentPerform(iterations: indices.count) { slot in
                    let parameters = self.parameters(at: indices[slot])
                    let image = self.render(parameters, noiseIndex: UInt64(indices[slot]))
                    image.writeCHWFloats(into: UnsafeMutableBufferPointer(start: imageBase! + slot * n, count: n))
                    labelBase![slot] = Int32(parameters.label)
                }
            }
        }
        return Batch(images: images, labels: labels, imageSize: imageSize)
    }

    /// `DataSource` conformance: the same as `batch(indices:)`; `random` is left untouched (no flips, see above).
    public func batch(indices: [Int], random: inout RandomStream) -> Batch {
        batch(indices: indices)
    }

    /// Draws a sample from explicit parameters; `noiseIndex` selects the background noise.
    public func render(_ parameters: Parameters, noiseIndex: UInt64) -> RGBImage {
        let size = imageSize
        let philox = Philox4x32(seed: seed)
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        let shape = Self.shape(ofLabel: parameters.label)
        let half = parameters.extent / 2
        let cx = parameters.centreX, cy = parameters.centreY
        let top = cy - half
        // Whether the point (x, y) (continuous pixel coordinates) is inside the shape.
        func inside(_ x: Float, _ y: Float) -> Bool {
            switch shape {
            case .circle:
                return (x - cx) * (x - cx) + (y - cy) * (y - cy) <= half * half
            case .square:
                return abs(x - cx) <= half && abs(y - cy) <= half
            case .triangle:
                // Apex at the top centre, base along the bottom edge: half-width grows by 1/2 per unit of depth.
                let depth = y - top
                return depth >= 0 && depth <= parameters.extent && abs(x - cx) <= depth / 2
            }
        }
        let samples = antialias ? 4 : 1
        let step = 1 / Float(samples)
        let minX = max(0, Int((cx - half).rounded(.down)) - 1), maxX = min(size - 1, Int((cx + half).rounded(.up)) + 1)
        let minY = max(0, Int((cy - half).rounded(.down)) - 1), maxY = min(size - 1, Int((cy + half).rounded(.up)) + 1)
        let colour = parameters.colour
        for y in 0..<size {
            for x in 0..<size {
                let pixel = y * size + x
                let noise = philox.block(counter: noiseIndex << 24 | UInt64(pixel), stream: Self.noiseStream)
                let amplitude = 2 * Self.noiseAmplitude
                var r = parameters.background + amplitude * (Philox4x32.unitFloat(noise.0) - 0.5)
                var g = parameters.background + amplitude * (Philox4x32.unitFloat(noise.1) - 0.5)
                var b = parameters.background * 1.15 + amplitude * (Philox4x32.unitFloat(noise.2) - 0.5)
                if x >= minX && x <= maxX && y >= minY && y <= maxY {
                    var hits = 0
                    for sy in 0..<samples {
                        for sx in 0..<samples where inside(Float(x) + (Float(sx) + 0.5) * step,
                                                           Float(y) + (Float(sy) + 0.5) * step) {
                            hits += 1
                        }
                    }
                    let coverage = Float(hits) / Float(samples * samples)
                    r += coverage * (colour.0 - r)
                    g += coverage * (colour.1 - g)
                    b += coverage * (colour.2 - b)
                }
                pixels[3 * pixel] = RGBImage.byte(from: r)
                pixels[3 * pixel + 1] = RGBImage.byte(from: g)
                pixels[3 * pixel + 2] = RGBImage.byte(from: b)
            }
        }
        return RGBImage(width: size, height: size, pixels: pixels)
    }
}
