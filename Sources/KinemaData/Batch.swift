import Foundation
import KinemaTensor

/// A batch of training images on the host, ready to upload: `count` images of 3×`imageSize`×`imageSize`, planar
/// CHW in [-1, 1], one after another (NCHW), and their class labels.
public struct Batch: Equatable, Sendable {
    public var images: [Float]
    public var labels: [Int32]
    public var count: Int
    public let imageSize: Int

    public init(images: [Float], labels: [Int32], imageSize: Int) {
        precondition(imageSize > 0, "image size must be positive")
        precondition(images.count == labels.count * 3 * imageSize * imageSize,
                     "\(labels.count) images of 3×\(imageSize)×\(imageSize) need \(labels.count * 3 * imageSize * imageSize) floats, got \(images.count)")
        self.images = images
        self.labels = labels
        self.count = labels.count
        self.imageSize = imageSize
    }

    /// Floats per image: 3 × imageSize².
    public var imageElementCount: Int { 3 * imageSize * imageSize }

    /// The NCHW shape of `images`.
    public var shape: [Int] { [count, 3, imageSize, imageSize] }

    /// Image `index` converted back to 8 bits (for previews and tests).
    public func image(at index: Int) -> RGBImage {
        precondition(index >= 0 && index < count, "batch index \(index) out of range 0..<\(count)")
        let n = imageElementCount
        return RGBImage(chwFloats: images[(index * n)..<((index + 1) * n)], width: imageSize, height: imageSize)
    }
}

/// A labelled image dataset the training loop draws batches from. Implementations produce host arrays only; they
/// never touch a backend.
public protocol DataSource {
    /// Number of classes; labels are 0..<numClasses.
    var numClasses: Int { get }
    /// Side of the square images the batches hold.
    var imageSize: Int { get }
    /// Number of samples; indices are 0..<count.
    var count: Int { get }
    /// Human-readable class names, indexed by label.
    var classNames: [String] { get }
    /// The samples at `indices`, in order. `random` drives augmentation (and, for datasets that can meet bad
    /// files, the choice of replacements), so a run is reproducible from its stream's state.
    func batch(indices: [Int], random: inout RandomStream) -> Batch
}

/// Samples that may share a batch (one bucket of clips) and the batch size they train at (nil: the run's).
public struct SampleGroup: Equatable, Sendable {
    public var indices: [Int]
    public var batchSize: Int?

    public init(_ indices: [Int], batchSize: Int? = nil) {
        self.indices = indices
        self.batchSize = batchSize
    }
}

/// Hands out the sample indices of an endless sequence of epochs: each epoch is a permutation of 0..<count drawn
/// from (seed, epoch) by Fisher–Yates with Philox, cut into batches of `batchSize`; the incomplete last batch of an
/// epoch is dropped. The whole progress is `state` (epoch, position), so a checkpoint resumes mid-epoch exactly.
/// With `groups` (bucketed data: indices that may share a batch), each group is permuted and cut into full batches
/// of its own size (its `batchSize`, else `batchSize`: large clips train in smaller batches), and the epoch's
/// batches are then shuffled together, so every batch holds one group.
public struct EpochSampler: Sendable {
    /// Where the sampler stands: `position` samples of epoch `epoch` have been handed out.
    public struct State: Codable, Equatable, Sendable {
        public var epoch: Int
        public var position: Int

        public init(epoch: Int = 0, position: Int = 0) {
            self.epoch = epoch
            self.position = position
        }
    }

    public let count: Int
    public let batchSize: Int
    public let seed: UInt64
    public let groups: [SampleGroup]?
    public private(set) var state: State
    /// The epoch's batches, and the next one to hand out (its samples before it are `state.position`).
    private var batches: [[Int]]
    private var next = 0

    public init(count: Int, batchSize: Int, seed: UInt64, groups: [SampleGroup]? = nil) {
        self.init(count: count, batchSize: batchSize, seed: seed, groups: groups, epoch: 0)
    }

    /// The sampler at the start of epoch `epoch`.
    private init(count: Int, batchSize: Int, seed: UInt64, groups: [SampleGroup]?, epoch: Int) {
        precondition(batchSize > 0 && (groups ?? []).allSatisfy { ($0.batchSize ?? 1) > 0 },
                     "batch sizes must be positive")
        let fills = groups.map { $0.contains { $0.indices.count >= $0.batchSize ?? batchSize } } ?? (count >= batchSize)
        precondition(fills, "dataset of \(count) samples cannot fill one batch of \(batchSize)"
                     + (groups == nil ? "" : " from one group"))
        self.count = count
        self.batchSize = batchSize
        self.seed = seed
        self.groups = groups
        state = State(epoch: epoch)
        batches = Self.epochBatches(count: count, batchSize: batchSize, groups: groups, seed: seed, epoch: epoch)
    }

    /// The sampler of the same data and options at a saved `state` (a checkpoint's). Throws when the state cannot
    /// be one of theirs: its position is not where a batch of its epoch starts (the data or the batch sizes changed).
    public init(count: Int, batchSize: Int, seed: UInt64, groups: [SampleGroup]? = nil,
                resumingAt state: State) throws {
        self.init(count: count, batchSize: batchSize, seed: seed, groups: groups, epoch: max(0, state.epoch))
        var handedOut = 0
        while next < batches.count && handedOut < state.position {
            handedOut += batches[next].count
            next += 1
        }
        guard state.epoch >= 0, handedOut == state.position else {
            throw DataError.badOption("the saved data position (epoch \(state.epoch), sample \(state.position)) is not "
                + "where a batch starts: the data or the batch sizes differ from the run that saved it")
        }
        self.state = state
    }

    public var epoch: Int { state.epoch }
    public var position: Int { state.position }

    /// Full batches per epoch (the remainder is dropped, per group when grouped).
    public var batchesPerEpoch: Int { batches.count }

    /// The indices of the next batch; moves to the next epoch (and its permutation) when the current one has handed
    /// out all its batches.
    public mutating func nextBatch() -> [Int] {
        if next == batches.count {
            state = State(epoch: state.epoch + 1, position: 0)
            batches = Self.epochBatches(count: count, batchSize: batchSize, groups: groups, seed: seed,
                                        epoch: state.epoch)
            next = 0
        }
        defer {
            state.position += batches[next].count
            next += 1
        }
        return batches[next]
    }

    /// An epoch's batches: one permutation of 0..<count cut into full batches, or each group's permutation cut into
    /// full batches of its size and the batches permuted (each group and the batch order from their own Philox keys).
    static func epochBatches(count: Int, batchSize: Int, groups: [SampleGroup]?, seed: UInt64, epoch: Int) -> [[Int]] {
        func cut(_ order: [Int], _ size: Int) -> [[Int]] {
            stride(from: 0, to: order.count - size + 1, by: size).map { Array(order[$0..<($0 + size)]) }
        }
        guard let groups else { return cut(permutation(count: count, seed: seed, epoch: epoch), batchSize) }
        var batches: [[Int]] = []
        for (number, group) in groups.enumerated() {
            let key = seed &+ UInt64(number + 1) &* 0x9E37_79B9_7F4A_7C15
            let shuffled = permutation(count: group.indices.count, seed: key, epoch: epoch).map { group.indices[$0] }
            batches += cut(shuffled, group.batchSize ?? batchSize)
        }
        return permutation(count: batches.count, seed: seed ^ 0xB0C4_E75A_3D1F_0001, epoch: epoch).map { batches[$0] }
    }

    /// The order of epoch `epoch`: Fisher–Yates driven by Philox with key `seed`, counter = step, stream = epoch.
    public static func permutation(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var order = Array(0..<count)
        guard count > 1 else { return order }
        let philox = Philox4x32(seed: seed)
        let stream = UInt64(epoch) | (0x5A4D << 48)  // a stream range no other user of this seed draws from
        for i in stride(from: count - 1, to: 0, by: -1) {
            let block = philox.block(counter: UInt64(i), stream: stream)
            let bits = UInt64(block.0) << 32 | UInt64(block.1)
            // Lemire's multiply-high: bias below bound / 2^64, i.e. none worth measuring.
            let j = Int(bits.multipliedFullWidth(by: UInt64(i + 1)).high)
            order.swapAt(i, j)
        }
        return order
    }
}
