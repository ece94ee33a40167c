import KinemaTensor

/// Every parameter of a model in flat storage, as llm.c lays it out: one tensor of compute-dtype values, one of
/// gradients and (under mixed precision) one of f32 master weights, each parameter a view at the same element
/// offset in all of them. The optimizer, the EMA and the gradient norm then run one pass over the flat buffers
/// instead of one launch per parameter.
///
/// Offsets are aligned to `alignment` elements (16-byte vector loads, cuBLASLt's operand alignment), but for the
/// parameters inside a packed run, which follow the one before them directly. The padding
/// between parameters is zero in every buffer and stays zero under AdamW (zero gradient, zero moments), so flat
/// passes over the whole buffer see only the parameters' elements.
public final class ParameterArena {
    /// Elements each parameter's offset is a multiple of.
    public static let alignment = 64

    public let parameters: [Parameter]
    public let computeDType: DType
    public let backend: any Backend
    /// [count] in `computeDType`: what the layers compute with.
    public let values: Tensor
    /// [count] f32 (f64 for f64 values): what the layers' backwards accumulate into.
    public let gradients: Tensor
    /// [count] f32 master weights when `computeDType` is a 16-bit type and the arena keeps them; else nil.
    public let master: Tensor?
    /// Element offset of each parameter, in the order of `parameters`.
    public let offsets: [Int]

    /// Moves `parameters` (built in f32, or f64) into flat storage. Their current values become the master weights
    /// exactly, and the compute copy is cast from them (rounded once to nearest even); their gradients start at
    /// zero. `keepsMaster: false` keeps only the compute copy (inference: half the memory of an f32 master).
    /// `packedRuns` (index ranges into `parameters`): runs stored with no padding inside, so that one view spans a
    /// run (`LinearStack`); a run starts aligned like any parameter.
    public init(parameters: [Parameter], computeDType: DType, backend: any Backend, keepsMaster: Bool = true,
                packedRuns: [Range<Int>] = []) {
        precondition(computeDType.isFloatingPoint, "ParameterArena: compute dtype \(computeDType) is not a float type")
        var offsets: [Int] = [], total = 0
        for (index, parameter) in parameters.enumerated() {
            precondition(parameter.value.dtype == .f32 || parameter.value.dtype == .f64,
                         "ParameterArena: \(parameter.name) is \(parameter.value.dtype); build layers in f32 (or f64)")
            if index > 0 && !packedRuns.contains(where: { $0.contains(index - 1) && $0.contains(index) }) {
                total = (total + Self.alignment - 1) / Self.alignment * Self.alignment
            }
            offsets.append(total)
            total += parameter.value.count
        }
        total = (total + Self.alignment - 1) / Self.alignment * Self.alignment
        self.parameters = parameters
        self.computeDType = computeDType
        self.backend = backend
        self.offsets = offsets
        values = backend.zeros([total], dtype: computeDType)
        gradients = backend.zeros([total], dtype: Parameter.gradientDType(for: computeDType))
        let needsMaster = keepsMaster && computeDType != .f32 && computeDType != .f64
        master = needsMaster ? backend.zeros([total], dtype: .f32) : nil
        for (parameter, offset) in zip(parameters, offsets) {
            let built = parameter.value
            let value = Self.view(values, offset, built.shape), gradient = Self.view(gradients, offset, built.shape)
            if let master {
                let masterView = Self.view(master, offset, built.shape)
                backend.copy(built, into: masterView)
                backend.copy(masterView, into: value)
                parameter.master = masterView
            } else {
                backend.copy(built, into: value)
                parameter.master = nil
            }
            parameter.value = value
            parameter.gradient = gradient
        }
    }

    /// Elements in each flat buffer, padding included.
    public var count: Int { values.count }

    /// The full-precision flat weights: the master, or the values when they are themselves f32/f64. What AdamW
    /// updates, the EMA follows and checkpoints save.
    public var weights: Tensor { master ?? values }

    /// The copy AdamW rewrites from the master in the same pass (nil when the values are the weights).
    public var computeCopy: Tensor? { master == nil ? nil : values }

    /// A view of `flat` (any buffer laid out like this arena) for parameter `index`.
    public func view(of flat: Tensor, parameter index: Int) -> Tensor {
        precondition(flat.count == count, "ParameterArena: a flat tensor of \(flat.count) elements, not \(count)")
        return Self.view(flat, offsets[index], parameters[index].value.shape)
    }

    /// One fill of the whole gradient buffer.
    public func zeroGradients() {
        backend.awaitConcurrentWork()
        backend.fill(gradients, with: 0)
        for parameter in parameters { parameter.gradientIsStale = false }
    }

    /// After the optimizer has read the gradients: zeroes those that layers add into (one launch over their ranges)
    /// and marks those written by products stale, for their next product to overwrite.
    public func consumeGradients() {
        backend.fill(gradients, ranges: addedGradientRanges, with: 0)
        for parameter in parameters where parameter.gradientWrittenByProducts { parameter.gradientIsStale = true }
    }

    /// Zeroes the gradients still stale (of layers this step's backward did not run), so that a pass over the flat
    /// buffer (the gradient norm, the optimizer) reads zeros there; nothing when every product ran.
    public func settleGradients() {
        backend.awaitConcurrentWork()  // the gradients products queued beside the backward
        let stale = parameters.indices.filter { parameters[$0].gradientIsStale }
        guard !stale.isEmpty else { return }
        backend.fill(gradients, ranges: stale.map { offsets[$0]..<(offsets[$0] + parameters[$0].value.count) },
                     with: 0)
        for index in stale { parameters[index].gradientIsStale = false }
    }

    /// The element ranges of the gradients layers add into, runs of consecutive such parameters merged (the padding
    /// between them is zero anyway).
    private lazy var addedGradientRanges: [Range<Int>] = {
        var ranges: [Range<Int>] = [], extending = false
        for (parameter, offset) in zip(parameters, offsets) {  // offsets grow with the index
            if parameter.gradientWrittenByProducts {
                extending = false
                continue
            }
            let end = offset + parameter.value.count
            if extending {
                ranges[ranges.count - 1] = ranges[ranges.count - 1].lowerBound..<end
            } else {
                ranges.append(offset..<end)
            }
            extending = true
        }
        return ranges
    }()

    /// Casts the master into the compute copy (after loading weights into the master); nothing without a master.
    public func refreshValuesFromMaster() {
        if let master { backend.copy(master, into: values) }
    }

    private static func view(_ flat: Tensor, _ offset: Int, _ shape: [Int]) -> Tensor {
        Tensor(shape: shape, dtype: flat.dtype, buffer: flat.buffer, offset: flat.offset + offset)
    }
}
