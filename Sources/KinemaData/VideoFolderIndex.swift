import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `kinema preprocess`: a folder of videos indexed as the CSV `VideoCSVDataset` reads (Open-Sora's layout). Two
/// layouts: class folders (UCF101: `ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi`; the caption is the folder's name
/// in words, "apply eye makeup"), or captioned videos (each video with a same-named .txt beside it holding its
/// caption). Every video is probed (frames, size, fps); one that cannot be read, or has no caption, is reported
/// with its path and left out.
public enum VideoFolderIndex {
    public enum Layout: String, Sendable { case classes, captions }

    public static let videoExtensions: Set<String> = ["mp4", "avi", "mkv", "mov", "webm", "gif", "m4v", "mpg", "mpeg"]

    /// The rows of the folder's videos, sorted by path, with paths relative to `relativeTo` when inside it.
    public static func rows(folder: String, layout: Layout, relativeTo base: String,
                            report: (String) -> Void) throws -> [VideoCSVDataset.Row] {
        let root = URL(fileURLWithPath: folder).standardizedFileURL
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DataError.rootNotFound(path: root.path)
        }
        let videos = (FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil,
                                                     options: [.skipsHiddenFiles])?.allObjects as? [URL] ?? [])
            .filter { videoExtensions.contains($0.pathExtension.lowercased()) }
            .sorted { $0.path < $1.path }
        let basePath = URL(fileURLWithPath: base).standardizedFileURL.path + "/"
        var rows: [VideoCSVDataset.Row] = []
        for video in videos {
            let caption: String
            switch layout {
            case .classes:
                guard video.deletingLastPathComponent().standardizedFileURL != root else {
                    report("skipping \(video.path): not inside a class folder")
                    continue
                }
                caption = words(video.deletingLastPathComponent().lastPathComponent)
            case .captions:
                let text = video.deletingPathExtension().appendingPathExtension("txt")
                guard let value = try? String(contentsOf: text, encoding: .utf8),
                      !value.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                    report("skipping \(video.path): no caption in \(text.path)")
                    continue
                }
                caption = value.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            do {
                let info = try FFmpeg.probeVideo(atPath: video.path)
                let path = video.path.hasPrefix(basePath) ? String(video.path.dropFirst(basePath.count)) : video.path
                rows.append(VideoCSVDataset.Row(path: path, text: caption, numFrames: info.frames, height: info.height,
                                                width: info.width, fps: info.fps))
            } catch {
                report("skipping video \(video.path): \(error)")
            }
        }
        guard !rows.isEmpty else { throw DataError.emptyDataset(path: root.path, reason: "no readable videos") }
        return rows
    }

    /// The layout a folder most likely has: class folders when its videos sit in subfolders, else captions.
    public static func guessLayout(folder: String) -> Layout {
        let root = URL(fileURLWithPath: folder).standardizedFileURL
        let entries = (try? FileManager.default.contentsOfDirectory(at: root, includingPropertiesForKeys: nil,
                                                                    options: [.skipsHiddenFiles])) ?? []
        return entries.contains { videoExtensions.contains($0.pathExtension.lowercased()) } ? .captions : .classes
    }

    /// "ApplyEyeMakeup" → "apply eye makeup"; "brush_hair" → "brush hair".
    public static func words(_ name: String) -> String {
        var result = "", previous: Character?
        for character in name {
            if character == "_" || character == "-" {
                result += " "
            } else {
                if character.isUppercase, let previous, previous.isLowercase || previous.isNumber { result += " " }
                result += character.lowercased()
            }
            previous = character
        }
        return result.split(separator: " ").joined(separator: " ")
    }

    /// Writes rows as a CSV (header path,text,num_frames,height,width,fps; RFC 4180 quoting) to a temporary name,
    /// then renames it over `path`.
    public static func writeCSV(_ rows: [VideoCSVDataset.Row], to path: String) throws {
        func field(_ value: String) -> String {
            value.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" })
                ? "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : value
        }
        var text = "path,text,num_frames,height,width,fps\n"
        for row in rows {
            let numbers = [row.numFrames.map(String.init) ?? "", row.height.map(String.init) ?? "",
                           row.width.map(String.init) ?? "", row.fps.map { String(format: "%g", $0) } ?? ""]
            text += ([field(row.path), field(row.text)] + numbers).joined(separator: ",") + "\n"
        }
        try AtomicFile.write(Data(text.utf8), to: URL(fileURLWithPath: path))
    }
}
