import ArgumentParser
import Foundation
import KinemaModels
import KinemaTensor

struct ForwardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Run one model forward on inputs from a safetensors file and write the output.",
        discussion: """
        The inputs file holds x [B, C, H, W], t [B] (timesteps, any float or int dtype) and y [B] (class labels, int).
        The output file holds `out` [B, C_out, H, W] in f32. Use it to check a converted checkpoint against the
        reference implementation.
        """)

    @Option(help: "A .safetensors checkpoint (original layout or `kinema train` output) or a diffusers folder.")
    var checkpoint: String
    @Option(help: "Safetensors file with x, t and y.") var inputs: String
    @Option(help: "Safetensors file to write `out` to.") var output: String
    @Flag(help: "Use the raw training weights instead of their EMA.") var noEma = false
    @Option(help: "Attention heads, when neither the checkpoint's metadata nor its hidden size tells.") var numHeads: Int?
    @OptionGroup var deviceOptions: DeviceOptions

    func run() throws {
        let backend = try deviceOptions.backend()
        let dtype = try deviceOptions.dtype()
        let model = try DiTCheckpoint.load(path: checkpoint, backend: backend, dtype: dtype, preferEMA: !noEma,
                                           numHeads: numHeads)
        let file = try SafetensorsFile(url: URL(fileURLWithPath: inputs))
        for name in ["x", "t", "y"] where !file.contains(name) {
            throw SafetensorsError.missingTensor(file: inputs, tensor: name)
        }
        let x = try file.tensor("x", on: backend, as: dtype)
        let t = try file.tensor("t", on: backend, as: dtype)
        let y = try file.tensor("y", on: backend, as: .i32)
        let batch = x.shape.first ?? 0
        guard t.shape == [batch], y.shape == [batch] else {
            throw ValidationError("\(inputs): t \(t.shape) and y \(y.shape) must both be [\(batch)] to match x \(x.shape)")
        }
        let out = backend.cast(model(x, timesteps: t, labels: y), to: .f32)
        try SafetensorsWriter.write([(name: "out", tensor: out)], to: URL(fileURLWithPath: output), backend: backend)
        printError("wrote out \(out.shape) to \(output)")
    }
}
