import ArgumentParser
import Foundation
import KinemaData
import KinemaModels
import KinemaTrain

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a class-conditional DiT with DiT's diffusion loss.",
        discussion: """
        Logs one JSON object per --log-every steps (step, loss, mse, vb, gradNorm, lr, imagesPerSecond) to stdout and
        to OUTPUT/log.jsonl, with a progress bar on stderr when stdout is a terminal. Saves OUTPUT/checkpoint.safetensors
        (model, EMA, AdamW state, step, random state, config) every --checkpoint-every steps and at the end; each save
        goes to a temporary file that is flushed and renamed, so an interrupted save never damages the last one.
        """)

    @Option(help: ArgumentHelp("Training data: 'synthetic' (bundled coloured shapes, 12 classes) or a folder with "
        + "one subfolder of PNG/JPEG images per class.", valueName: "synthetic|folder"))
    var data = "synthetic"

    @Option(help: "Image side in pixels (images are center-cropped and resized to it).") var imageSize = 16
    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Images per step.") var batchSize = 32
    @Option(help: "Total optimisation steps (a resumed run continues up to this number).") var steps = 1000
    @Option(help: "AdamW learning rate.") var lr = 1e-3
    @Option(help: "Linear learning-rate warm-up steps.") var warmupSteps = 50
    @Option(help: "Learning rate after warm-up: constant, or cosine (decays to a tenth at --steps).")
    var lrDecay = "constant"
    @Option(help: "AdamW decoupled weight decay.") var weightDecay = 0.0
    @Option(help: "Clip the global gradient norm to this (0 disables).") var maxGradNorm = 1.0
    @Option(help: "Decay of the exponential moving average of the weights.") var emaDecay = 0.995
    @Option(help: "Seed for initialisation, data order, timesteps, noise and label dropout.") var seed: UInt64 = 0
    @Option(help: "Save a checkpoint every N steps (0: only at the end).") var checkpointEvery = 250
    @Option(help: "Write a log line every N steps.") var logEvery = 25
    @Option(help: "Output folder for checkpoint.safetensors and log.jsonl.") var output = "out/train"
    @Flag(help: "Continue from OUTPUT/checkpoint.safetensors, bit-exactly where it stopped.") var resume = false
    @OptionGroup var deviceOptions: DeviceOptions

    func run() throws {
        let backend = try deviceOptions.backend()
        let dataset = try openDataset(data, imageSize: imageSize, seed: seed)
        let config = try modelOptions.config(imageSize: imageSize, channels: 3, classes: dataset.numClasses)
        let model = try DiT(config: config, backend: backend, dtype: try deviceOptions.dtype(), seed: seed)
        guard let decay = LearningRateSchedule.Decay(rawValue: lrDecay) else {
            throw ValidationError("--lr-decay '\(lrDecay)' is not a schedule; use constant or cosine")
        }
        let options = TrainingOptions(batchSize: batchSize, steps: steps, learningRate: lr, warmupSteps: warmupSteps,
                                      learningRateDecay: decay, weightDecay: weightDecay, maxGradNorm: maxGradNorm, emaDecay: emaDecay, seed: seed,
                                      checkpointEvery: checkpointEvery, logEvery: logEvery)
        let trainer = try Trainer(model: model, data: dataset, options: options)
        let folder = URL(fileURLWithPath: output)
        let checkpoint = folder.appendingPathComponent("checkpoint.safetensors")
        if resume {
            guard FileManager.default.fileExists(atPath: checkpoint.path) else {
                throw ValidationError("--resume: no checkpoint at \(checkpoint.path); train without --resume first")
            }
            try trainer.resume(from: checkpoint)
            printError("resumed from \(checkpoint.path) at step \(trainer.step)")
        }
        printError("training \(model.parameterCount) parameters (\(config.hiddenSize) hidden, depth \(config.depth), "
            + "\(config.tokenCount) tokens) on \(dataset.count) images of \(dataset.numClasses) classes, \(backend.name)")
        try trainer.run(checkpoint: checkpoint,
                        log: try TrainingLog(jsonLinesFile: folder.appendingPathComponent("log.jsonl")))
        printError("saved \(checkpoint.path)")
    }
}
