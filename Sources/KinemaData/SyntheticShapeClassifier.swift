/// A hand-written classifier for `SyntheticShapes` images, used to score generated samples (does a model asked
/// for "red circle" draw a red circle?). It needs no training:
///
/// 1. Foreground strength = the brightest channel of each pixel, smoothed by a 3×3 box filter (cuts pixel noise
///    by 3×). Otsu's threshold splits it into foreground and background; with too little contrast between the two
///    halves there is no shape and the answer is nil.
/// 2. The largest 8-connected foreground component is the shape (specks of noise are ignored).
/// 3. Shape from three features of that component: how much of its bounding box it fills (circle π/4 ≈ 0.785,
///    square 1, triangle 0.5), how much of the box's four corner blocks (a quarter of the side each way) it fills
///    (square 1, circle 0.32, triangle 0.375: its two bottom corners three-quarters), and how much wider its bottom
///    quarter is than its top quarter, relative to the box width (triangle ≈ 0.75, circle and square 0); the
///    nearest prototype wins. The corners are what tells a square with ragged edges (fill ~0.85) from a circle.
/// 4. Colour = the palette colour whose direction in RGB is closest (cosine) to the mean colour of the
///    component's pixels, so a darker or brighter rendering still maps to its hue.
public struct SyntheticShapeClassifier: Sendable {
    /// Smallest difference (0–255) between the mean foreground and mean background strength that counts as a shape.
    public var minimumContrast: Float
    /// Smallest shape, as a fraction of the image's pixels.
    public var minimumAreaFraction: Float

    public init(minimumContrast: Float = 40, minimumAreaFraction: Float = 0.004) {
        self.minimumContrast = minimumContrast
        self.minimumAreaFraction = minimumAreaFraction
    }

    /// The features the decision is made from (exposed for diagnostics).
    public struct Features: Sendable {
        public var area: Int
        public var boxWidth: Int
        public var boxHeight: Int
        /// area / (boxWidth × boxHeight).
        public var fill: Float
        /// (mean row width of the bottom quarter − that of the top quarter) / boxWidth.
        public var taper: Float
        /// Mean occupancy of the four corner blocks of the bounding box, each a quarter of its width and height.
        public var corners: Float
        /// Mean colour of the component, 0–255.
        public var meanColour: (Float, Float, Float)
    }

    /// The shape and colour in `image`, or nil if it holds no clear foreground.
    public func predict(_ image: RGBImage) -> (shape: SyntheticShapes.Shape, colour: SyntheticShapes.Colour)? {
        guard let features = features(of: image) else { return nil }
        // Prototypes in (fill, taper), each feature scaled by how much it varies at small image sizes.
        let prototypes: [(SyntheticShapes.Shape, Float, Float, Float)] = [
            (.circle, 0.785, 0, 0.32), (.square, 1, 0, 1), (.triangle, 0.5, 0.7, 0.375),
        ]
        let shape = prototypes.min { a, b in
            func distance(_ p: (SyntheticShapes.Shape, Float, Float, Float)) -> Float {
                let df = (features.fill - p.1) / 0.1, dt = (features.taper - p.2) / 0.15
                let dc = (features.corners - p.3) / 0.2
                return df * df + dt * dt + dc * dc
            }
            return distance(a) < distance(b)
        }!.0
        let mean = features.meanColour
        let meanNorm = (mean.0 * mean.0 + mean.1 * mean.1 + mean.2 * mean.2).squareRoot()
        guard meanNorm > 0 else { return nil }
        let colour = SyntheticShapes.Colour.allCases.max { a, b in
            func cosine(_ c: SyntheticShapes.Colour) -> Float {
                let p = c.rgb
                let norm = (p.0 * p.0 + p.1 * p.1 + p.2 * p.2).squareRoot()
                return (mean.0 * p.0 + mean.1 * p.1 + mean.2 * p.2) / (norm * meanNorm)
            }
            return cosine(a) < cosine(b)
        }!
        return (shape, colour)
    }

    /// The predicted `SyntheticShapes` label, or nil if the image holds no clear foreground.
    public func classify(_ image: RGBImage) -> Int? {
        predict(image).map { SyntheticShapes.label(shape: $0.shape, colour: $0.colour) }
    }

    /// Fraction of `images` classified as their label (no prediction counts as wrong).
    public func accuracy(images: [RGBImage], labels: [Int]) -> Double {
        precondition(images.count == labels.count, "\(images.count) images but \(labels.count) labels")
        guard !images.isEmpty else { return 0 }
        let correct = zip(images, labels).filter { classify($0.0) == $0.1 }.count
        return Double(correct) / Double(images.count)
    }

    /// The features of the largest foreground component, or nil if there is none.
    public func features(of image: RGBImage) -> Features? {
        let width = image.width, height = image.height, n = width * height
        guard n > 0 else { return nil }
        let pixels = image.pixels
        var strength = [Float](repeating: 0, count: n)
        for i in 0..<n { strength[i] = Float(max(pixels[3 * i], pixels[3 * i + 1], pixels[3 * i + 2])) }
        let smoothed = Self.smooth3(strength, width: width, height: height)

        // Otsu on a 256-bin histogram of the smoothed strength.
        var histogram = [Int](repeating: 0, count: 256)
        for value in smoothed { histogram[min(255, max(0, Int(value.rounded())))] += 1 }
        var totalSum: Double = 0
        for (level, count) in histogram.enumerated() { totalSum += Double(level * count) }
        var bestLevel = -1, bestVariance = -1.0, belowCount = 0, belowSum = 0.0
        for level in 0..<255 {
            belowCount += histogram[level]
            belowSum += Double(level * histogram[level])
            let aboveCount = n - belowCount
            guard belowCount > 0 && aboveCount > 0 else { continue }
            let meanBelow = belowSum / Double(belowCount), meanAbove = (totalSum - belowSum) / Double(aboveCount)
            let variance = Double(belowCount) * Double(aboveCount) * (meanAbove - meanBelow) * (meanAbove - meanBelow)
            if variance > bestVariance { bestVariance = variance; bestLevel = level }
        }
        guard bestLevel >= 0 else { return nil }
        var below = 0, above = 0, belowTotal: Float = 0, aboveTotal: Float = 0
        for value in smoothed {
            if Int(value.rounded()) > bestLevel { above += 1; aboveTotal += value } else { below += 1; belowTotal += value }
        }
        guard above > 0 && below > 0, aboveTotal / Float(above) - belowTotal / Float(below) >= minimumContrast else {
            return nil
        }
        let threshold = Float(bestLevel) + 0.5
        var mask = smoothed.map { $0 > threshold }

        // Largest 8-connected component (flood fill with an explicit stack).
        var component = [Int32](repeating: -1, count: n)
        var bestComponent: Int32 = -1, bestSize = 0
        var stack: [Int] = []
        var label: Int32 = 0
        for start in 0..<n where mask[start] && component[start] < 0 {
            var size = 0
            stack.append(start)
            component[start] = label
            while let p = stack.popLast() {
                size += 1
                let px = p % width, py = p / width
                for dy in -1...1 {
                    let y = py + dy
                    guard y >= 0 && y < height else { continue }
                    for dx in -1...1 {
                        let x = px + dx
                        guard x >= 0 && x < width else { continue }
                        let q = y * width + x
                        if mask[q] && component[q] < 0 {
                            component[q] = label
                            stack.append(q)
                        }
                    }
                }
            }
            if size > bestSize { bestSize = size; bestComponent = label }
            label += 1
        }
        guard bestComponent >= 0, Float(bestSize) >= max(3, minimumAreaFraction * Float(n)) else { return nil }
        for i in 0..<n { mask[i] = component[i] == bestComponent }

        var minX = width, maxX = -1, minY = height, maxY = -1
        var rowWidths = [Int](repeating: 0, count: height)
        var sum: (Float, Float, Float) = (0, 0, 0)
        for y in 0..<height {
            for x in 0..<width where mask[y * width + x] {
                minX = min(minX, x); maxX = max(maxX, x); minY = min(minY, y); maxY = max(maxY, y)
                rowWidths[y] += 1
                let i = 3 * (y * width + x)
                sum.0 += Float(pixels[i]); sum.1 += Float(pixels[i + 1]); sum.2 += Float(pixels[i + 2])
            }
        }
        let boxWidth = maxX - minX + 1, boxHeight = maxY - minY + 1
        let quarter = max(1, boxHeight / 4)
        let topRows = rowWidths[minY..<(minY + quarter)], bottomRows = rowWidths[(maxY + 1 - quarter)...maxY]
        let topMean = Float(topRows.reduce(0, +)) / Float(quarter)
        let bottomMean = Float(bottomRows.reduce(0, +)) / Float(quarter)
        let area = Float(bestSize)
        let cornerWidth = max(1, boxWidth / 4), cornerHeight = max(1, boxHeight / 4)
        var cornerPixels = 0
        for y in Array(minY..<(minY + cornerHeight)) + Array((maxY + 1 - cornerHeight)...maxY) {
            for x in Array(minX..<(minX + cornerWidth)) + Array((maxX + 1 - cornerWidth)...maxX) where mask[y * width + x] {
                cornerPixels += 1
            }
        }
        return Features(area: bestSize, boxWidth: boxWidth, boxHeight: boxHeight,
                        fill: area / Float(boxWidth * boxHeight), taper: (bottomMean - topMean) / Float(boxWidth),
                        corners: Float(cornerPixels) / Float(4 * cornerWidth * cornerHeight),
                        meanColour: (sum.0 / area, sum.1 / area, sum.2 / area))
    }

    /// 3×3 binomial filter ([1 2 1]/4 along each axis) with edges clamped: noise σ × 0.375, and — unlike a box
    /// filter — the corner pixel of a square keeps more than half its strength, so corners survive the threshold.
    static func smooth3(_ values: [Float], width: Int, height: Int) -> [Float] {
        var horizontal = values
        for y in 0..<height {
            let row = y * width
            for x in 0..<width {
                horizontal[row + x] = (values[row + max(0, x - 1)] + 2 * values[row + x] + values[row + min(width - 1, x + 1)]) / 4
            }
        }
        var out = horizontal
        for y in 0..<height {
            let up = max(0, y - 1) * width, here = y * width, down = min(height - 1, y + 1) * width
            for x in 0..<width { out[here + x] = (horizontal[up + x] + 2 * horizontal[here + x] + horizontal[down + x]) / 4 }
        }
        return out
    }
}
