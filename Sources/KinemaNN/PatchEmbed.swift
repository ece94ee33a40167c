import KinemaTensor

/// DiT's x_embedder (timm PatchEmbed): Conv2d(C, D, kernel = stride = p) computed as one matmul over the
/// non-overlapping patches. The weight keeps the conv layout [D, C, p, p] so checkpoints load as they are;
/// flattened it is [D, C·p·p] with the patch vector ordered (c, row, col).
public final class PatchEmbed: Layer {
    public struct Cache {
        /// The patches [B, h·w, C·p·p], the matmul's input.
        public let patches: Tensor
        public init(patches: Tensor) { self.patches = patches }
    }

    public let weight: Parameter
    public let bias: Parameter
    public let patchSize: Int
    public let inChannels: Int
    public let dim: Int
    let backend: any Backend

    public var parameters: [Parameter] { [weight, bias] }

    /// Default initial values are DiT's: Xavier-uniform on the weight viewed as [D, C·p·p], zero bias.
    public init(backend: any Backend, name: String, patchSize: Int, inChannels: Int, dim: Int, dtype: DType,
                seed: UInt64 = 0) {
        self.backend = backend
        self.patchSize = patchSize
        self.inChannels = inChannels
        self.dim = dim
        let fanIn = inChannels * patchSize * patchSize, weightName = "\(name).proj.weight"
        weight = Parameter(name: weightName, shape: [dim, inChannels, patchSize, patchSize],
                           values: Initializers.xavierUniform(shape: [dim, fanIn], fanIn: fanIn, fanOut: dim, seed: seed,
                                                              stream: initializerStream(for: weightName)),
                           dtype: dtype, backend: backend)
        bias = Parameter(name: "\(name).proj.bias", shape: [dim], constant: 0, dtype: dtype, backend: backend)
    }

    private var patchLength: Int { inChannels * patchSize * patchSize }

    /// images [B, C, H, W] → tokens [B, (H/p)(W/p), D], row-major over the patch grid (h, w).
    public func forward(_ images: Tensor) -> (Tensor, Cache) {
        precondition(images.rank == 4 && images.shape[1] == inChannels
                     && images.shape[2] % patchSize == 0 && images.shape[3] % patchSize == 0,
                     "\(weight.name): images must be [B, \(inChannels), H, W] with H, W multiples of \(patchSize), got \(images.shape)")
        let (batch, p) = (images.shape[0], patchSize)
        let (h, w) = (images.shape[2] / p, images.shape[3] / p)
        // [B, C, h, p, w, p] → [B, h, w, C, p, p] → [B, h·w, C·p·p].
        let patches = backend.permute(images.reshaped([batch, inChannels, h, p, w, p]), [0, 2, 4, 1, 3, 5])
            .reshaped([batch, h * w, patchLength])
        let y = backend.matmul(patches.reshaped([batch * h * w, patchLength]), weight.value.reshaped([dim, patchLength]),
                               transposeB: true)
        return (backend.addBias(y, bias.value).reshaped([batch, h * w, dim]), Cache(patches: patches))
    }

    /// Accumulates dW += dyᵀ patches and db += Σ dy. The images are data, so no input gradient is formed.
    public func backward(_ dy: Tensor, _ cache: Cache) {
        let rows = dy.reshaped([-1, dim])
        backend.matmul(rows, cache.patches.reshaped([-1, patchLength]), transposeA: true, transposeB: false,
                       into: weight.gradient.reshaped([dim, patchLength]), alpha: 1, beta: 1)
        backend.accumulateBiasGradient(rows, into: bias.gradient)
    }
}

public enum Patches {
    /// DiT's unpatchify: tokens [B, h·w, p·p·C] whose last axis is ordered (p_row, p_col, c) → images [B, C, h·p, w·p]
    public static func unpatchify(_ tokens: Tensor, channels: Int, patchSize: Int, gridHeight: Int, gridWidth: Int,
                                  backend: any Backend) -> Tensor {
        let (batch, p, c) = (tokens.shape[0], patchSize, channels)
        precondition(tokens.rank == 3 && tokens.shape[1] == gridHeight * gridWidth && tokens.shape[2] == p * p * c,
                     "unpatchify: tokens \(tokens.shape) are not [B, \(gridHeight)·\(gridWidth), \(p)·\(p)·\(c)]")
        // [B, h, w, p, p, C] → [B, C, h, p, w, p] (einsum "nhwpqc->nchpwq").
        return backend.permute(tokens.reshaped([batch, gridHeight, gridWidth, p, p, c]), [0, 5, 1, 3, 2, 4])
            .reshaped([batch, c, gridHeight * p, gridWidth * p])
    }

    /// The adjoint of `unpatchify` (a pure permutation, so also its inverse): dImages [B, C, H, W] → [B, h·w, p·p·C].
    public static func unpatchifyBackward(_ dImages: Tensor, patchSize: Int, backend: any Backend) -> Tensor {
        let p = patchSize
        precondition(dImages.rank == 4 && dImages.shape[2] % p == 0 && dImages.shape[3] % p == 0,
                     "unpatchifyBackward: \(dImages.shape) is not [B, C, H, W] with H, W multiples of \(p)")
        let (batch, c, h, w) = (dImages.shape[0], dImages.shape[1], dImages.shape[2] / p, dImages.shape[3] / p)
        // [B, C, h, p, w, p] → [B, h, w, p, p, C].
        return backend.permute(dImages.reshaped([batch, c, h, p, w, p]), [0, 2, 4, 3, 5, 1])
            .reshaped([batch, h * w, p * p * c])
    }
}
