import KinemaTensor

/// DiT's x_embedder (timm PatchEmbed): Conv2d(C, D, kernel = stride = p) computed as one matmul over the
/// non-overlapping patches. The weight keeps the conv layout [D, C, p, p] so checkpoints load as they are;
/// flattened it is [D, C·p·p] with the patch vector ordered (c, row, col). With a `temporalPatch` pt it is a video
/// DiT's PatchEmbed3D, Conv3d(C, D, kernel = stride = (pt, p, p)): weight [D, C, pt, p, p], patches ordered
/// (c, frame, row, col), tokens frame-major over the (T/pt, H/p, W/p) grid.
public final class PatchEmbed: Layer {
    public struct Cache {
        /// The patches [B, h·w, C·p·p], the matmul's input.
        public let patches: Tensor
        public init(patches: Tensor) { self.patches = patches }
    }

    public let weight: Parameter
    public let bias: Parameter
    public let patchSize: Int
    /// Frames per patch for video (rank-5) input; nil for images.
    public let temporalPatch: Int?
    public let inChannels: Int
    public let dim: Int
    let backend: any Backend

    public var parameters: [Parameter] { [weight, bias] }

    /// Default initial values are DiT's: Xavier-uniform on the weight viewed as [D, C·p·p], zero bias.
    public init(backend: any Backend, name: String, patchSize: Int, temporalPatch: Int? = nil, inChannels: Int, dim: Int,
                dtype: DType, seed: UInt64 = 0) {
        self.backend = backend
        self.patchSize = patchSize
        self.temporalPatch = temporalPatch
        self.inChannels = inChannels
        self.dim = dim
        let fanIn = inChannels * (temporalPatch ?? 1) * patchSize * patchSize, weightName = "\(name).proj.weight"
        weight = Parameter(name: weightName,
                           shape: [dim, inChannels] + (temporalPatch.map { [$0] } ?? []) + [patchSize, patchSize],
                           values: Initializers.xavierUniform(shape: [dim, fanIn], fanIn: fanIn, fanOut: dim, seed: seed,
                                                              stream: initializerStream(for: weightName)),
                           dtype: dtype, backend: backend)
        bias = Parameter(name: "\(name).proj.bias", shape: [dim], constant: 0, dtype: dtype, backend: backend)
        weight.gradientWrittenByProducts = true
    }

    private var patchLength: Int { inChannels * (temporalPatch ?? 1) * patchSize * patchSize }

    /// images [B, C, H, W] → tokens [B, (H/p)(W/p), D], row-major over the patch grid (h, w); with a temporal
    /// patch, videos [B, C, T, H, W] → [B, (T/pt)(H/p)(W/p), D].
    public func forward(_ images: Tensor) -> (Tensor, Cache) {
        let pt = temporalPatch ?? 1, spatial = images.rank - 2
        precondition(images.rank == (temporalPatch == nil ? 4 : 5) && images.shape[1] == inChannels
                     && images.shape[spatial] % patchSize == 0 && images.shape[spatial + 1] % patchSize == 0
                     && (temporalPatch == nil || images.shape[2] % pt == 0),
                     "\(weight.name): input must be [B, \(inChannels), \(temporalPatch == nil ? "" : "T, ")H, W] with "
                     + "\(temporalPatch == nil ? "" : "T a multiple of \(pt) and ")H, W multiples of \(patchSize), "
                     + "got \(images.shape)")
        let (batch, p) = (images.shape[0], patchSize)
        let (t, h, w) = (temporalPatch == nil ? 1 : images.shape[2] / pt, images.shape[spatial] / p,
                         images.shape[spatial + 1] / p)
        // [B, C, t, pt, h, p, w, p] → [B, t, h, w, C, pt, p, p] → [B, t·h·w, C·pt·p·p] (images: t = pt = 1).
        let patches = backend.permute(images.reshaped([batch, inChannels, t, pt, h, p, w, p]), [0, 2, 4, 6, 1, 3, 5, 7])
            .reshaped([batch, t * h * w, patchLength])
        let y = backend.matmul(patches.reshaped([batch * t * h * w, patchLength]),
                               weight.value.reshaped([dim, patchLength]), transposeB: true)
        return (backend.addBias(y, bias.value).reshaped([batch, t * h * w, dim]), Cache(patches: patches))
    }

    /// Accumulates dW += dyᵀ patches and db += Σ dy. The images are data, so no input gradient is formed.
    public func backward(_ dy: Tensor, _ cache: Cache) {
        let rows = dy.reshaped([-1, dim])
        backend.matmul(rows, cache.patches.reshaped([-1, patchLength]), transposeA: true, transposeB: false,
                       into: weight.gradient.reshaped([dim, patchLength]), alpha: 1, beta: weight.productBeta())
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

    /// A video DiT's unpatchify3D: tokens [B, t·h·w, pt·p·p·C] ordered (frame, row, col, c) → videos
    /// [B, C, t·pt, h·p, w·p] (einsum "nthwrpqc->nctrhpwq").
    public static func unpatchify3D(_ tokens: Tensor, channels c: Int, patchSize p: Int, temporalPatch pt: Int,
                                    grid: (t: Int, h: Int, w: Int), backend: any Backend) -> Tensor {
        let batch = tokens.shape[0]
        precondition(tokens.rank == 3 && tokens.shape[1] == grid.t * grid.h * grid.w && tokens.shape[2] == pt * p * p * c,
                     "unpatchify3D: tokens \(tokens.shape) are not [B, \(grid.t)·\(grid.h)·\(grid.w), \(pt)·\(p)·\(p)·\(c)]")
        return backend.permute(tokens.reshaped([batch, grid.t, grid.h, grid.w, pt, p, p, c]), [0, 7, 1, 4, 2, 5, 3, 6])
            .reshaped([batch, c, grid.t * pt, grid.h * p, grid.w * p])
    }

    /// The adjoint (and inverse) of `unpatchify3D`: dVideos [B, C, T, H, W] → [B, t·h·w, pt·p·p·C].
    public static func unpatchify3DBackward(_ dVideos: Tensor, patchSize p: Int, temporalPatch pt: Int,
                                            backend: any Backend) -> Tensor {
        let (batch, c) = (dVideos.shape[0], dVideos.shape[1])
        let (t, h, w) = (dVideos.shape[2] / pt, dVideos.shape[3] / p, dVideos.shape[4] / p)
        return backend.permute(dVideos.reshaped([batch, c, t, pt, h, p, w, p]), [0, 2, 4, 6, 3, 5, 7, 1])
            .reshaped([batch, t * h * w, pt * p * p * c])
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
