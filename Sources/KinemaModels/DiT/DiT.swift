import KinemaNN
import KinemaTensor

/// The class-conditional Diffusion Transformer with adaLN-zero blocks, forward and backward by hand.
/// Parameters carry the names of the original DiT implementation (`blocks.3.attn.qkv.weight`, …), so a checkpoint
/// in that layout loads by name; `DiTWeights.swift` maps the diffusers layout onto them.
public final class DiT {
    public struct Cache {
        let labels: Tensor
        let patchEmbed: PatchEmbed.Cache
        let timestep: TimestepEmbedder.Cache
        let conditioning: Tensor  // c = t_emb + y_emb, before SiLU
        let activated: Tensor  // SiLU(c): the input of every adaLN
        let blocks: [DiTBlock.Cache]
        let finalLayer: DiTFinalLayer.Cache
    }

    public let config: DiTConfig
    public let backend: any Backend
    public let dtype: DType
    let xEmbedder: PatchEmbed
    let tEmbedder: TimestepEmbedder
    let yEmbedder: LabelEmbedder
    let blocks: [DiTBlock]
    let finalLayer: DiTFinalLayer
    /// Every block's adaLN and the final layer's, run as one [depth·6D + 2D, D] product: they all read SiLU(c).
    let modulation: LinearStack
    /// The fixed 2D sin-cos table, flattened to [N·D] so one bias add puts it on every sample.
    let positionalEmbedding: Tensor

    /// Every parameter in flat storage: compute-dtype values, f32 gradients and (under mixed precision) the f32
    /// master weights the optimizer updates.
    public let arena: ParameterArena

    /// A model with the paper's initialisation — xavier-uniform linears, N(0, 0.02) embeddings, zeroed adaLN and
    /// final layer — which the layers themselves draw from `seed` (each parameter its own Philox stream).
    /// The layers are built in f32 (f64 for an f64 model) and then moved into `arena` with `dtype` as the compute
    /// dtype, so a bf16 model's master weights are the exact f32 initial values. `keepsMaster: false` drops the
    /// f32 master of a 16-bit model (inference only: the weights then exist only as the bf16 copy).
    public init(config: DiTConfig, backend: any Backend, dtype: DType = .f32, seed: UInt64 = 0,
                keepsMaster: Bool = true) throws {
        try config.validate()
        self.config = config
        self.backend = backend
        self.dtype = dtype
        let d = config.hiddenSize
        let layerDType: DType = dtype == .f64 ? .f64 : .f32
        xEmbedder = PatchEmbed(backend: backend, name: "x_embedder", patchSize: config.patchSize,
                               inChannels: config.inChannels, dim: d, dtype: layerDType, seed: seed)
        tEmbedder = TimestepEmbedder(backend: backend, name: "t_embedder", dim: d,
                                     frequencyShift: config.timestepFrequencyShift, dtype: layerDType, seed: seed)
        yEmbedder = LabelEmbedder(backend: backend, name: "y_embedder", numClasses: config.numClasses, dim: d,
                                  dropoutProbability: config.classDropoutProb, dtype: layerDType, seed: seed)
        blocks = (0..<config.depth).map {
            DiTBlock(backend: backend, name: "blocks.\($0)", config: config, dtype: layerDType, seed: seed)
        }
        finalLayer = DiTFinalLayer(backend: backend, config: config, dtype: layerDType)
        let table = PositionalEmbedding.sinCos2D(dim: d, gridHeight: config.gridSize, gridWidth: config.gridSize)
        positionalEmbedding = backend.upload(table, shape: [table.count], dtype: dtype)
        (arena, modulation) = adaLNZeroArena(embedders: xEmbedder.parameters + tEmbedder.parameters
                                                 + yEmbedder.parameters,
                                             blocks: blocks, finalLayer: finalLayer, dtype: dtype, backend: backend,
                                             keepsMaster: keepsMaster)
    }

    public var parameters: [Parameter] { arena.parameters }

    /// The dtype of the model's inputs and outputs: f32 (f64 for an f64 model). A bf16 model computes in bf16
    /// inside but takes and returns f32, so samplers and losses keep their state in f32.
    public var ioDType: DType { dtype == .f64 ? .f64 : .f32 }

    public var parameterCount: Int { parameters.map(\.value.count).reduce(0, +) }

    /// The null label that classifier-free guidance conditions the unconditional branch on.
    public var nullClass: Int32 { Int32(config.numClasses) }

    public func dropLabels(_ labels: [Int32], random: inout RandomStream) -> [Int32] {
        yEmbedder.dropLabels(labels, random: &random)
    }

    /// x [B, C, H, W] (H = W = inputSize), timesteps [B], labels i32 [B] → [B, C_out, H, W] in x's dtype (x and
    /// the output are cast to and from the compute dtype where they differ).
    public func forward(_ x: Tensor, timesteps: Tensor, labels: Tensor) -> (Tensor, Cache) {
        precondition(x.rank == 4 && x.shape[1] == config.inChannels && x.shape[2] == config.inputSize
                     && x.shape[3] == config.inputSize,
                     "DiT expects [B, \(config.inChannels), \(config.inputSize), \(config.inputSize)], got \(x.shape)")
        let batch = x.shape[0]
        let (patches, patchCache) = xEmbedder.forward(x.dtype == dtype ? x : backend.cast(x, to: dtype))
        let h = backend.addBias(patches.reshaped([batch, -1]), positionalEmbedding)
            .reshaped([batch, config.tokenCount, config.hiddenSize])
        let (timeEmbedding, timestepCache) = tEmbedder.forward(timesteps)
        let c = backend.add(timeEmbedding, yEmbedder.forward(labels))
        let activated = backend.silu(c)
        // Six [B, D] modulations a block, then the final layer's two.
        let modulations = backend.chunk(modulation.forward(activated), parts: 6 * blocks.count + 2, axis: 1)
        var blockCaches: [DiTBlock.Cache] = []
        blockCaches.reserveCapacity(blocks.count)
        var stream = ResidualStream(h)
        for (index, block) in blocks.enumerated() {
            let (out, cache) = block.forward(stream, modulation: modulations[6 * index..<6 * index + 6])
            stream = out
            blockCaches.append(cache)
        }
        let (tokens, finalCache) = finalLayer.forward(stream, modulation: modulations.suffix(2))
        let out = Patches.unpatchify(tokens, channels: config.outChannels, patchSize: config.patchSize,
                                     gridHeight: config.gridSize, gridWidth: config.gridSize, backend: backend)
        return (out.dtype == x.dtype ? out : backend.cast(out, to: x.dtype), Cache(labels: labels, patchEmbed: patchCache, timestep: timestepCache, conditioning: c,
                           activated: activated, blocks: blockCaches, finalLayer: finalCache))
    }

    /// Accumulates every parameter's gradient for the output gradient dOut [B, C_out, H, W].
    public func backward(_ dOut: Tensor, _ cache: Cache) {
        let dTokens = Patches.unpatchifyBackward(dOut.dtype == dtype ? dOut : backend.cast(dOut, to: dtype),
                                                 patchSize: config.patchSize, backend: backend)
        let (dFinal, dFinalModulation) = finalLayer.backward(dTokens, cache.finalLayer)
        var dh = dFinal
        var dModulations: [[Tensor]] = []
        for (block, blockCache) in zip(blocks, cache.blocks).reversed() {
            let (dx, dModulation, _) = block.backward(dh, blockCache)
            dh = dx
            dModulations.append(dModulation)
        }
        // Every adaLN's gradients in the forward's order, then the stack's backward: one product each for the
        // weights and for SiLU(c), whose gradient sums every block's share.
        let dModulation = backend.concat(dModulations.reversed().flatMap { $0 } + dFinalModulation, axis: 1)
        let dActivated = modulation.backward(dModulation, input: cache.activated)
        let dc = backend.siluBackward(dActivated, x: cache.conditioning)
        tEmbedder.backward(dc, cache.timestep)
        yEmbedder.backward(dc, labels: cache.labels)
        xEmbedder.backward(dh, cache.patchEmbed)
    }

    public func callAsFunction(_ x: Tensor, timesteps: Tensor, labels: Tensor) -> Tensor {
        forward(x, timesteps: timesteps, labels: labels).0
    }

    /// One fill of the arena's flat gradient buffer.
    public func zeroGradients() {
        arena.zeroGradients()
    }
}
