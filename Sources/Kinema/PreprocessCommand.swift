import ArgumentParser
import Foundation
import KinemaData

struct PreprocessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preprocess",
        abstract: "Index a folder of videos as the CSV that `kinema train --data videos.csv` reads.",
        discussion: """
        Layouts: class folders (UCF101: one subfolder per class; the caption is the folder's name in words) or \\
        captioned videos (a same-named .txt beside each video). Every video is probed with ffprobe for its frame \\
        count, size and fps; a video that cannot be read, or lacks a caption, is reported with its path and left \\
        out. Paths in the CSV are relative to the CSV's folder when the videos are inside it.
        """)

    @Option(help: "The folder of videos.") var input: String
    @Option(help: "The CSV to write.") var output: String
    @Option(help: ArgumentHelp("classes, captions, or auto (class folders when the videos sit in subfolders).",
                               valueName: "auto|classes|captions"))
    var layout = "auto"

    func run() throws {
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
}
