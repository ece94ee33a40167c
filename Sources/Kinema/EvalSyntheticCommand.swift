import ArgumentParser
import Foundation
import KinemaData
import KinemaTrain

struct EvalSyntheticCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval-synthetic",
        abstract: "Score a model trained on the synthetic shapes (colour and shape of each sample, chance 1/12) or "
            + "on the synthetic videos (colour, shape and direction of motion of each clip, chance 1/48).")

    @OptionGroup var sampling: SamplingOptions
    @Option(help: "Samples per class (clips per prompt for a video model).") var perClass = 16
    @Option(help: ArgumentHelp("Also write the samples here: a PNG grid (one row per class), or for a video model an "
        + ".mp4/.gif of all clips side by side (one row per prompt)."))
    var grid: String?

    func run() throws {
        guard perClass >= 1 else { throw ValidationError("--per-class must be at least 1") }
        if sampling.isVideoCheckpoint { return try runVideo() }
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

    func runVideo() throws {
        let (generator, frames, imageSize) = try sampling.videoGenerator()
        let result = try SyntheticVideoEvaluation.run(generator: generator, perPrompt: perClass, frames: frames,
                                                      imageSize: imageSize, seed: sampling.seed) { done, total in
            FileHandle.standardError.write(Data("\rsampled \(done)/\(total)".utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        let ways = SyntheticVideos.Direction.allCases
        print("direction asked → seen (" + ways.map(\.description).joined(separator: ", ") + ", none):")
        for (way, row) in zip(ways, result.directionCounts) {
            print("  \(way.description.padding(toLength: 6, withPad: " ", startingAt: 0)) " + row.map { String(format: "%4d", $0) }.joined())
        }
        print(String(format: "colour accuracy %.1f%%, shape accuracy %.1f%%, direction accuracy %.1f%%",
                     result.colourAccuracy * 100, result.shapeAccuracy * 100, result.directionAccuracy * 100))
        print(String(format: "eval-synthetic video accuracy: %.1f%% (colour, shape and direction all right; %d clips, "
                     + "chance %.1f%%)", result.accuracy * 100, result.prompts.count,
                     100.0 / Double(SyntheticVideos.Prompt.all.count)))
        if let heldOut = result.heldOutAccuracy, let seen = result.seenAccuracy {
            let names = generator.heldOutPrompts.map(\.description).sorted().joined(separator: "; ")
            print(String(format: "held-out prompts (never in training: %@): %.1f%%; the other prompts: %.1f%%",
                         names, heldOut * 100, seen * 100))
        }
        if let grid {
            let sheets = (0..<frames).map { f in makeGrid(images: result.clips.map { $0[f] }, columns: perClass) }
            try FFmpeg.writeVideo(sheets, fps: 8, scale: 2, toPath: grid)
            printError("wrote \(grid)")
        }
    }
}
