import ArgumentParser
import Foundation
import KinemaModels
import KinemaTensor

struct ForwardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Run one model forward on inputs from a safetensors file and write the output.",
        discussion: """
        The inputs use the reference implementations' names. A DiT (original layout, `kinema train` output, or a
        diffusers DiTTransformer2DModel folder) takes x [B, C, H, W], t [B] (timesteps, any float or int dtype) and
        y [B] (class labels, int). A diffusers PixArtTransformer2DModel or LatteTransformer3DModel folder takes x
        ([B, C, H, W], or [B, C, F, H, W] for Latte), t [B], encoder_hidden_states [B, L, C_text] and, optionally,
        encoder_attention_mask [B, L] (1 = a real token); they write `out` (f32). A transformers text encoder folder
        (BERT such as all-MiniLM-L6-v2, T5EncoderModel, CLIPTextModel) takes input_ids [B, L] and optionally
        attention_mask [B, L] and writes last_hidden_state, and pooler_output for BERT and CLIP. A diffusers AutoencoderKL folder takes image [B, C, H, W] (writes latent_mean and
        latent_logvar) and/or latent [B, 4, h, w] (writes decoded; unscaled latents: divide by the config's
        scaling_factor first). An Open-Sora STDiT state dict (.safetensors; its config read off the tensors' shapes,
        with --num-heads, --space-scale and --time-scale for what no shape tells) takes x [B, C, T, H, W], t,
        encoder_hidden_states and encoder_attention_mask as Latte does; so does an OpenDiT vDiT state dict (3D patch
        kernel; its adaLN-zero pooled caption as encoder_hidden_states [B, 1, C]). Use it to check a converted
        checkpoint against the reference implementation.
        """)

    @Option(help: "A .safetensors checkpoint (original layout or `kinema train` output) or a diffusers folder.")
    var checkpoint: String
    @Option(help: "Safetensors file with the inputs (see above).") var inputs: String
    @Option(help: "Safetensors file to write `out` to.") var output: String
    @Flag(help: "Use the raw training weights instead of their EMA.") var noEma = false
    @Option(help: "Attention heads, when neither the checkpoint's metadata nor its hidden size tells.") var numHeads: Int?
    @Option(help: "An Open-Sora STDiT's space_scale (0.5 for its 256 px release, 1 at 512 px).") var spaceScale = 1.0
    @Option(help: "An Open-Sora STDiT's time_scale.") var timeScale = 1.0
    @Option(help: "A video DiT's conditioning (adaln-zero or in-context; the tensors tell a cross-attention one).")
    var conditioning = VideoDiTConfig.Conditioning.adaLNZero
    @OptionGroup var deviceOptions: DeviceOptions

    func run() throws {
        let backend = try deviceOptions.backend()
        let dtype = try deviceOptions.dtype()
        let file = try SafetensorsFile(url: URL(fileURLWithPath: inputs))
        func input(_ name: String, as type: DType) throws -> Tensor {
            guard file.contains(name) else { throw SafetensorsError.missingTensor(file: inputs, tensor: name) }
            return try file.tensor(name, on: backend, as: type)
        }
        let out: Tensor
        switch DiffusersFolder.className(checkpoint) {
        case "AutoencoderKL":
            let vae = try AutoencoderKLCheckpoint.load(folder: checkpoint, backend: backend, dtype: dtype)
            guard file.contains("image") || file.contains("latent") else {
                throw ValidationError("\(inputs): an AutoencoderKL takes `image` [B, C, H, W] and/or `latent` [B, 4, h, w]")
            }
            var outputs: [(String, Tensor)] = []
            if file.contains("image") {
                let image = try input("image", as: .f32), f = vae.config.downsampling
                guard image.rank == 4, image.shape[1] == vae.config.inChannels, image.shape[2] % f == 0,
                      image.shape[3] % f == 0 else {
                    throw ValidationError("\(inputs): image \(image.shape) must be [B, \(vae.config.inChannels), H, W] "
                        + "with H and W multiples of \(f)")
                }
                let (mean, logVariance) = vae.encode(image)
                outputs += [("latent_mean", mean), ("latent_logvar", logVariance)]
            }
            if file.contains("latent") {
                let latent = try input("latent", as: .f32)
                guard latent.rank == 4, latent.shape[1] == vae.config.latentChannels else {
                    throw ValidationError("\(inputs): latent \(latent.shape) must be [B, \(vae.config.latentChannels), h, w]")
                }
                outputs.append(("decoded", vae.decode(latent)))
            }
            try write(outputs, backend: backend)
            return
        case "BertModel", "T5EncoderModel", "CLIPTextModel":
            let encoder = try TextEncoder(folder: checkpoint, backend: backend, dtype: dtype)
            let ids = try input("input_ids", as: .i32)
            let mask = file.contains("attention_mask") ? try input("attention_mask", as: .i32) : nil
            guard ids.rank == 2, mask.map({ $0.shape == ids.shape }) ?? true, ids.shape[1] <= encoder.maxPositions else {
                throw ValidationError("\(inputs): input_ids \(ids.shape) must be [B, L] with L ≤ "
                    + "\(encoder.maxPositions), and attention_mask \(mask?.shape ?? []) the same shape")
            }
            let hostIDs = backend.download(ids).map { Int32($0) }
            let vocabulary = encoder.vocabularySize
            guard hostIDs.allSatisfy({ $0 >= 0 && Int($0) < vocabulary }) else {
                throw ValidationError("\(inputs): input_ids must lie in 0..<\(vocabulary) (the vocabulary)")
            }
            let (hidden, pooled) = encoder.forward(inputIDs: ids, hostIDs: hostIDs, attentionMask: mask)
            try write([("last_hidden_state", hidden)] + (pooled.map { [("pooler_output", $0)] } ?? []), backend: backend)
            return
        case "PixArtTransformer2DModel", "LatteTransformer3DModel":
            let x = try input("x", as: .f32), t = try input("t", as: .f32)
            let captions = try input("encoder_hidden_states", as: .f32)
            let mask = file.contains("encoder_attention_mask") ? try input("encoder_attention_mask", as: .i32) : nil
            let batch = x.shape.first ?? 0
            guard t.shape == [batch], captions.rank == 3, captions.shape[0] == batch,
                  mask.map({ $0.shape == [batch, captions.shape[1]] }) ?? true else {
                throw ValidationError("\(inputs): t \(t.shape), encoder_hidden_states \(captions.shape) and "
                    + "encoder_attention_mask \(mask?.shape ?? []) do not fit x \(x.shape) ([B], [B, L, C], [B, L])")
            }
            if DiffusersFolder.className(checkpoint) == "LatteTransformer3DModel" {
                let model = try LatteCheckpoint.load(folder: checkpoint, backend: backend, dtype: dtype, keepsMaster: false)
                guard x.rank == 5 else { throw ValidationError("\(inputs): Latte takes x [B, C, F, H, W], got \(x.shape)") }
                out = model.forward(x, timesteps: t, captions: captions, captionMask: mask).0
            } else {
                let model = try PixArtCheckpoint.load(folder: checkpoint, backend: backend, dtype: dtype, keepsMaster: false)
                guard x.rank == 4 else { throw ValidationError("\(inputs): PixArt takes x [B, C, H, W], got \(x.shape)") }
                out = model.forward(x, timesteps: t, captions: captions, captionMask: mask).0
            }
        case _ where (try? SafetensorsFile(url: URL(fileURLWithPath: checkpoint))).map({
            STDiTCheckpoint.isOpenSoraSTDiT($0) || VideoDiTCheckpoint.isVideoDiT($0) }) ?? false:
            let weights = try SafetensorsFile(url: URL(fileURLWithPath: checkpoint))
            let model: any TextConditionedVideoModel = STDiTCheckpoint.isOpenSoraSTDiT(weights)
                ? try STDiTCheckpoint.load(checkpoint, numHeads: numHeads, spaceScale: spaceScale, timeScale: timeScale,
                                           backend: backend, dtype: dtype, keepsMaster: false)
                : try VideoDiTCheckpoint.load(checkpoint, numHeads: numHeads, conditioning: conditioning,
                                              backend: backend, dtype: dtype)
            let (x, t) = (try input("x", as: .f32), try input("t", as: .f32))
            let captions = try input("encoder_hidden_states", as: .f32)
            let mask = file.contains("encoder_attention_mask") ? try input("encoder_attention_mask", as: .i32) : nil
            let batch = x.shape.first ?? 0, (p, pt) = (model.patchSize, model.temporalPatch)
            guard x.rank == 5, x.shape[1] == model.inChannels, x.shape[2] % pt == 0, x.shape[3] % p == 0,
                  x.shape[4] % p == 0, t.shape == [batch], captions.rank == 3, captions.shape[0] == batch,
                  captions.shape[2] == model.captionChannels,
                  mask.map({ $0.shape == [batch, captions.shape[1]] }) ?? true else {
                throw ValidationError("\(inputs): the model takes x [B, \(model.inChannels), T, H, W] (T a multiple of "
                    + "\(pt), H, W of \(p)), t [B], encoder_hidden_states [B, L, \(model.captionChannels)] and "
                    + "encoder_attention_mask [B, L]; got \(x.shape), \(t.shape), \(captions.shape), \(mask?.shape ?? [])")
            }
            out = model.predict(x, timesteps: t, captions: captions, captionMask: mask)
        default:
            let model = try DiTCheckpoint.load(path: checkpoint, backend: backend, dtype: dtype, preferEMA: !noEma,
                                               numHeads: numHeads)
            let x = try input("x", as: dtype), t = try input("t", as: dtype), y = try input("y", as: .i32)
            let batch = x.shape.first ?? 0
            guard t.shape == [batch], y.shape == [batch] else {
                throw ValidationError("\(inputs): t \(t.shape) and y \(y.shape) must both be [\(batch)] to match x \(x.shape)")
            }
            out = model(x, timesteps: t, labels: y)
        }
        try write([("out", out)], backend: backend)
    }

    private func write(_ outputs: [(String, Tensor)], backend: any Backend) throws {
        let tensors = outputs.map { (name: $0.0, tensor: backend.cast($0.1, to: .f32)) }
        try SafetensorsWriter.write(tensors, to: URL(fileURLWithPath: output), backend: backend)
        printError("wrote " + tensors.map { "\($0.name) \($0.tensor.shape)" }.joined(separator: ", ") + " to \(output)")
    }
}
