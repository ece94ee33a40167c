import ArgumentParser
import Foundation
import KinemaData
import KinemaTrain

struct EvalSyntheticCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval-synthetic",
        abstract: "Score a model trained on the synthetic shapes: the fraction of samples whose dominant colour and "
            + "shape match the requested class (chance: 1/12).")

    @OptionGroup var sampling: SamplingOptions
    @Option(help: "Samples per class.") var perClass = 16
    @Option(help: "Also write the samples as a PNG grid here (one row per class).") var grid: String?

    func run() throws {
        guard perClass >= 1 else { throw ValidationError("--per-class must be at least 1") }
        let generator = try sampling.generator()
        let result = try SyntheticEvaluation.run(generator: generator, perClass: perClass, seed: sampling.seed) { done, total in
            FileHandle.standardError.write(Data("\rsampled \(done)/\(total)".utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        for (label, accuracy) in result.perClass.enumerated() {
            print(String(format: "%-16@ %5.1f%%", SyntheticShapes.className(label) as NSString, accuracy * 100))
        }
        print(String(format: "colour accuracy %.1f%%, shape accuracy %.1f%%", result.colourAccuracy * 100,
                     result.shapeAccuracy * 100))
        print(String(format: "eval-synthetic accuracy: %.1f%% (%d samples, chance %.1f%%)", result.accuracy * 100,
                     result.labels.count, 100.0 / Double(SyntheticShapes.classCount)))
        if let grid {
            try FFmpeg.writeImage(makeGrid(images: result.images, columns: perClass), toPath: grid)
            printError("wrote \(grid)")
        }
    }
}
