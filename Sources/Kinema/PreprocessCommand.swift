import ArgumentParser
import Foundation
import KinemaData
import KinemaModels
import KinemaTrain

struct PreprocessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preprocess",
        abstract: "Index a folder of videos as the CSV that `kinema train` reads, or encode clips into a latent cache.",
        discussion: """
        Indexing (--input FOLDER --output videos.csv): class folders (UCF101: one subfolder per class; the caption \
        is the folder's name in words) or captioned videos (a same-named .txt beside each video). Every video is \
        probed with ffprobe for its frame count, size and fps; a video that cannot be read, or lacks a caption, is \
        reported with its path and left out. Paths in the CSV are relative to the CSV's folder when the videos are \
        inside it.

        Caching (--data videos.csv|synthetic-video --cache FOLDER): every clip (cut as training cuts it: \
        --num-frames, --frame-interval, --image-size or --buckets; --crops-per-clip temporal crops of each video, \
        default one) is encoded by the VAE (--vae; without one the pixels are kept) and its caption by the text \
        encoder (--text-encoder, --caption-length), into safetensors shards of --shard-size clips of one shape, \
        then the index latent-cache.json (written last: a folder with an index is complete). `kinema train --data \
        FOLDER` then reads latents and caption states directly, loading neither model.
        """)

    @Option(help: "Indexing: the folder of videos.") var input: String?
    @Option(help: "Indexing: the CSV to write.") var output: String?
    @Option(help: ArgumentHelp("Indexing: classes, captions, or auto (class folders when the videos sit in subfolders).",
                               valueName: "auto|classes|captions"))
    var layout = "auto"
    @Option(help: "Caching: the clips to encode (a CSV of videos, or synthetic-video).") var data: String?
    @Option(help: "Caching: the folder to write the latent cache to.") var cache: String?
    @Option(help: "Caching: pixel side of the clips (without --buckets).") var imageSize = 16
    @Option(help: "Caching: clips per shard.") var shardSize = 256
    @Option(help: "Caching: the seed of the temporal crops.") var seed: UInt64 = 0
    @Option(help: "Caching: temporal crops drawn and encoded per video (for videos longer than a clip).")
    var cropsPerClip = 1
    @OptionGroup var video: VideoDataOptions
    @OptionGroup var deviceOptions: DeviceOptions

    func run() throws {
        switch (input, output, data, cache) {
        case let (input?, output?, nil, nil): try index(input, into: output)
        case let (nil, nil, data?, cache?): try encode(data, into: cache)
        default:
            throw ValidationError("give --input and --output (index a folder of videos as a CSV) or --data and --cache "
                                  + "(encode clips into a latent cache)")
        }
    }

    private func index(_ input: String, into output: String) throws {
        let chosen: VideoFolderIndex.Layout
        switch layout {
        case "auto": chosen = VideoFolderIndex.guessLayout(folder: input)
        default:
            guard let parsed = VideoFolderIndex.Layout(rawValue: layout) else {
                throw ValidationError("--layout '\(layout)': use auto, classes or captions")
            }
            chosen = parsed
        }
        let base = URL(fileURLWithPath: output).deletingLastPathComponent().path
        let rows = try VideoFolderIndex.rows(folder: input, layout: chosen, relativeTo: base, report: printError)
        try VideoFolderIndex.writeCSV(rows, to: output)
        let captions = Set(rows.map(\.text)).count
        printError("wrote \(rows.count) videos (\(captions) distinct captions, \(chosen.rawValue) layout) to \(output)")
    }

    private func encode(_ data: String, into cache: String) throws {
        guard shardSize > 0, cropsPerClip > 0 else {
            throw ValidationError("--shard-size and --crops-per-clip must be positive")
        }
        guard !LatentCacheIndex.isCache(data) else { throw ValidationError("\(data) is a latent cache already") }
        let backend = try deviceOptions.backend()
        // The synthetic clips are endless: a cache of them holds 8 of each of the 48 prompts.
        let clips = try openVideoClips(data, video: video, imageSize: imageSize, seed: seed, syntheticCount: 48 * 8)
        let text = try TextConditioner(folder: video.textEncoder ?? TextConditioner.defaultFolder, backend: backend,
                                       length: video.captionLength)
        let vae = try video.vae.map { try AutoencoderKLCheckpoint.load(folder: $0, backend: backend) }
        // A crop starts at random only where the video's length is known (the CSV's num_frames, or ffprobe's with
        // --buckets); elsewhere every crop starts at the first frame.
        if cropsPerClip > 1, let csv = clips as? VideoCSVDataset {
            let unknown = csv.rows.filter { $0.numFrames == nil }.count
            if unknown > 0 {
                printError("warning: \(unknown) of the \(csv.count) videos of \(data) have no num_frames column value: "
                           + "their \(cropsPerClip) crops all start at frame 0 (add the column, or probe the videos "
                           + "with --buckets)")
            }
        }
        let index = try LatentCacheWriter.write(data: clips, vae: vae, text: text, to: URL(fileURLWithPath: cache),
                                                shardSize: shardSize, cropsPerClip: cropsPerClip,
                                                seed: seed) { done, total in
            if done == total || done % 64 < 8 { printError("encoded \(done)/\(total) clips") }
        }
        printError("wrote \(index.captions.count) clips in \(index.shards.count) shard(s) "
                   + "(\(Set(index.shards.map(\.clip)).map(\.description).sorted().joined(separator: ", "))) to \(cache)")
    }
}
