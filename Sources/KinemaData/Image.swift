/// An 8-bit RGB image stored row-major, interleaved (HWC, `rgb24`): pixel (x, y) is at `3 * (y * width + x)`.
public struct RGBImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0, "negative image size \(width)×\(height)")
        precondition(pixels.count == width * height * 3,
                     "\(width)×\(height) rgb24 image needs \(width * height * 3) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// An image filled with one colour.
    public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8) = (0, 0, 0)) {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            pixels[3 * i] = fill.0
            pixels[3 * i + 1] = fill.1
            pixels[3 * i + 2] = fill.2
        }
        self.init(width: width, height: height, pixels: pixels)
    }

    /// The pixel at column `x`, row `y`.
    public subscript(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
        get {
            precondition(x >= 0 && x < width && y >= 0 && y < height, "pixel (\(x), \(y)) outside \(width)×\(height)")
            let i = 3 * (y * width + x)
            return (pixels[i], pixels[i + 1], pixels[i + 2])
        }
        set {
            precondition(x >= 0 && x < width && y >= 0 && y < height, "pixel (\(x), \(y)) outside \(width)×\(height)")
            let i = 3 * (y * width + x)
            pixels[i] = newValue.0
            pixels[i + 1] = newValue.1
            pixels[i + 2] = newValue.2
        }
    }

    // MARK: Float conversion

    /// The image as planar CHW floats in [-1, 1] (`v / 127.5 - 1`), the layout and range the model trains on.
    public func chwFloats() -> [Float] {
        var out = [Float](repeating: 0, count: pixels.count)
        out.withUnsafeMutableBufferPointer { writeCHWFloats(into: $0) }
        return out
    }

    /// Writes the CHW floats of `chwFloats()` into `destination` (at least `3 * width * height` elements), so a
    /// batch can be filled without intermediate arrays.
    public func writeCHWFloats(into destination: UnsafeMutableBufferPointer<Float>) {
        let plane = width * height
        precondition(destination.count >= 3 * plane, "destination too small for a \(width)×\(height) image")
        pixels.withUnsafeBufferPointer { source in
            for i in 0..<plane {
                destination[i] = Float(source[3 * i]) / 127.5 - 1
                destination[plane + i] = Float(source[3 * i + 1]) / 127.5 - 1
                destination[2 * plane + i] = Float(source[3 * i + 2]) / 127.5 - 1
            }
        }
    }

    /// An image from planar CHW floats in [-1, 1]: each value is clamped to [-1, 1], mapped to [0, 255] and
    /// rounded to the nearest integer (NaN becomes 0). Inverse of `chwFloats()` for every 8-bit image.
    public init<C: Collection>(chwFloats values: C, width: Int, height: Int) where C.Element == Float, C.Index == Int {
        let plane = width * height
        precondition(values.count == 3 * plane, "\(width)×\(height) CHW image needs \(3 * plane) floats, got \(values.count)")
        let start = values.startIndex
        var pixels = [UInt8](repeating: 0, count: 3 * plane)
        for channel in 0..<3 {
            for i in 0..<plane {
                pixels[3 * i + channel] = Self.byte(fromUnit: values[start + channel * plane + i])
            }
        }
        self.init(width: width, height: height, pixels: pixels)
    }

    @inline(__always)
    static func byte(fromUnit value: Float) -> UInt8 {
        guard !value.isNaN else { return 0 }
        let scaled = ((Swift.min(Swift.max(value, -1), 1) + 1) * 127.5).rounded()
        return UInt8(Swift.min(Swift.max(scaled, 0), 255))
    }

    @inline(__always)
    static func byte(from value: Float) -> UInt8 {
        guard !value.isNaN else { return 0 }
        return UInt8(Swift.min(Swift.max(value.rounded(), 0), 255))
    }

    // MARK: Geometry

    /// The image mirrored left–right.
    public func horizontallyFlipped() -> RGBImage {
        var out = pixels
        for y in 0..<height {
            let row = 3 * y * width
            for x in 0..<width {
                let source = row + 3 * (width - 1 - x), target = row + 3 * x
                out[target] = pixels[source]
                out[target + 1] = pixels[source + 1]
                out[target + 2] = pixels[source + 2]
            }
        }
        return RGBImage(width: width, height: height, pixels: out)
    }

    /// The rectangle of `width`×`height` pixels whose top-left corner is (`x`, `y`).
    public func cropped(x: Int, y: Int, width cropWidth: Int, height cropHeight: Int) -> RGBImage {
        precondition(x >= 0 && y >= 0 && cropWidth >= 0 && cropHeight >= 0
                     && x + cropWidth <= width && y + cropHeight <= height,
                     "crop \(cropWidth)×\(cropHeight) at (\(x), \(y)) outside \(width)×\(height)")
        var out = [UInt8]()
        out.reserveCapacity(3 * cropWidth * cropHeight)
        for row in y..<(y + cropHeight) {
            let start = 3 * (row * width + x)
            out.append(contentsOf: pixels[start..<(start + 3 * cropWidth)])
        }
        return RGBImage(width: cropWidth, height: cropHeight, pixels: out)
    }

    /// The image resampled to `newWidth`×`newHeight`: area averaging along an axis that shrinks, bilinear
    /// interpolation (pixel centres at half-integers, edges clamped) along an axis that grows.
    public func resized(width newWidth: Int, height newHeight: Int) -> RGBImage {
        precondition(newWidth > 0 && newHeight > 0, "cannot resize to \(newWidth)×\(newHeight)")
        precondition(width > 0 && height > 0, "cannot resize an empty image")
        return resampled(columns: Self.axisWeights(from: width, to: newWidth, range: 0..<newWidth),
                         rows: Self.axisWeights(from: height, to: newHeight, range: 0..<newHeight))
    }

    /// Resizes so the short side equals `size` (keeping the aspect ratio; the long side is rounded) and returns
    /// the centred `size`×`size` square — the same framing as DiT's `center_crop_arr`. Only the pixels that survive
    /// the crop are computed.
    public func centerCropResize(to size: Int) -> RGBImage {
        centerCropResize(width: size, height: size)
    }

    /// Scaled so it covers `newWidth` × `newHeight` (aspect kept), then the centre cut out at that size.
    public func centerCropResize(width newWidth: Int, height newHeight: Int) -> RGBImage {
        precondition(newWidth > 0 && newHeight > 0, "crop size must be positive, got \(newWidth)×\(newHeight)")
        precondition(width > 0 && height > 0, "cannot resize an empty image")
        let scale = Swift.max(Double(newWidth) / Double(width), Double(newHeight) / Double(height))
        let scaledWidth = Swift.max(newWidth, Int((Double(width) * scale).rounded()))
        let scaledHeight = Swift.max(newHeight, Int((Double(height) * scale).rounded()))
        let left = (scaledWidth - newWidth) / 2, top = (scaledHeight - newHeight) / 2
        return resampled(columns: Self.axisWeights(from: width, to: scaledWidth, range: left..<(left + newWidth)),
                         rows: Self.axisWeights(from: height, to: scaledHeight, range: top..<(top + newHeight)))
    }

    /// For each output index in `range` of an axis resampled from `inSize` to `outSize` samples: the source
    /// indices and weights (summing to 1) that make it.
    static func axisWeights(from inSize: Int, to outSize: Int, range: Range<Int>) -> [[(index: Int, weight: Float)]] {
        let scale = Double(inSize) / Double(outSize)
        return range.map { output -> [(index: Int, weight: Float)] in
            if inSize == outSize { return [(index: output, weight: Float(1))] }
            if inSize > outSize {
                // Area averaging: the output pixel covers [output, output + 1) * scale of the source.
                let lower = Double(output) * scale, upper = Double(output + 1) * scale
                var taps: [(index: Int, weight: Float)] = []
                var source = Int(lower.rounded(.down))
                while Double(source) < upper && source < inSize {
                    let overlap = Swift.min(upper, Double(source + 1)) - Swift.max(lower, Double(source))
                    if overlap > 1e-9 { taps.append((source, Float(overlap / scale))) }
                    source += 1
                }
                return taps
            }
            // Bilinear: sample the source at the output pixel's centre.
            let centre = Swift.min(Swift.max((Double(output) + 0.5) * scale - 0.5, 0), Double(inSize - 1))
            let low = Int(centre.rounded(.down)), high = Swift.min(low + 1, inSize - 1)
            let fraction = Float(centre - Double(low))
            if fraction == 0 || low == high { return [(index: low, weight: Float(1))] }
            return [(index: low, weight: 1 - fraction), (index: high, weight: fraction)]
        }
    }

    /// Separable resampling: columns first (into a float buffer of the source's rows), then rows.
    private func resampled(columns: [[(index: Int, weight: Float)]], rows: [[(index: Int, weight: Float)]]) -> RGBImage {
        let outWidth = columns.count, outHeight = rows.count
        // Only the source rows some output row reads need the horizontal pass.
        var neededRows = [Bool](repeating: false, count: height)
        for taps in rows { for tap in taps { neededRows[tap.index] = true } }
        var horizontal = [Float](repeating: 0, count: height * outWidth * 3)
        pixels.withUnsafeBufferPointer { source in
            horizontal.withUnsafeMutableBufferPointer { target in
                for y in 0..<height where neededRows[y] {
                    let sourceRow = 3 * y * width, targetRow = 3 * y * outWidth
                    for (x, taps) in columns.enumerated() {
                        var r: Float = 0, g: Float = 0, b: Float = 0
                        for tap in taps {
                            let i = sourceRow + 3 * tap.index
                            r += tap.weight * Float(source[i])
                            g += tap.weight * Float(source[i + 1])
                            b += tap.weight * Float(source[i + 2])
                        }
                        target[targetRow + 3 * x] = r
                        target[targetRow + 3 * x + 1] = g
                        target[targetRow + 3 * x + 2] = b
                    }
                }
            }
        }
        var out = [UInt8](repeating: 0, count: outWidth * outHeight * 3)
        horizontal.withUnsafeBufferPointer { source in
            for (y, taps) in rows.enumerated() {
                for i in 0..<(3 * outWidth) {
                    var value: Float = 0
                    for tap in taps { value += tap.weight * source[3 * tap.index * outWidth + i] }
                    out[3 * y * outWidth + i] = Self.byte(from: value)
                }
            }
        }
        return RGBImage(width: outWidth, height: outHeight, pixels: out)
    }
}
