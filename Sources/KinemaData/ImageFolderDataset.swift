import Foundation
import KinemaTensor

/// Images in one subfolder per class, like torchvision's `ImageFolder`: the class names are the subfolder names,
/// sorted, and a class's label is its position in that order; each class's files (searched recursively, hidden
/// files and folders skipped) are those with an image extension (png jpg jpeg bmp webp, any case), sorted by path.
/// Each image is decoded through ffmpeg, resized so its short side is `imageSize`, and centre-cropped square.
///
/// A file that cannot be decoded is reported once on stderr ("skipping unreadable image PATH: reason") and never
/// tried again; `loadBatch` replaces it by another random sample so batches stay full.
///
/// Decoding costs one ffmpeg process per image, so cropped images are kept in memory up to `cacheBytes`: the first
/// ones loaded stay (no eviction — under uniformly random access any fixed subset has the hit rate an LRU cache
/// would, without the churn), so a dataset that fits is decoded once per run.
public final class ImageFolderDataset: DataSource, @unchecked Sendable {
    public static let imageExtensions: Set<String> = ["png", "jpg", "jpeg", "bmp", "webp"]

    public let root: String
    public let imageSize: Int
    public let classNames: [String]
    /// Path of every sample, in index order.
    public let paths: [String]
    /// Label of every sample, in index order.
    public let labels: [Int]
    /// Where reports of unreadable images go (stderr by default).
    public var report: (String) -> Void

    /// Memory budget of the decoded-image cache, in bytes (0 disables it).
    public let cacheBytes: Int

    private let lock = NSLock()
    private var bad: [Int: String] = [:]
    private var cache: [Int: RGBImage] = [:]
    private var cachedBytes = 0

    public init(root: String, imageSize: Int, cacheBytes: Int = 512 << 20,
                report: @escaping (String) -> Void = ImageFolderDataset.printToStandardError) throws {
        precondition(imageSize > 0, "image size must be positive")
        let fileManager = FileManager.default
        var isDirectory: ObjCBool = false
        guard fileManager.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DataError.rootNotFound(path: root)
        }
        let rootURL = URL(fileURLWithPath: root, isDirectory: true)
        let entries: [URL]
        do {
            entries = try fileManager.contentsOfDirectory(at: rootURL, includingPropertiesForKeys: [.isDirectoryKey],
                                                          options: [.skipsHiddenFiles])
        } catch {
            throw DataError.emptyDataset(path: root, reason: "cannot list it (\(error.localizedDescription))")
        }
        let classFolders = entries.filter { url in
            (try? url.resourceValues(forKeys: [.isDirectoryKey]).isDirectory) == true
        }.sorted { $0.lastPathComponent < $1.lastPathComponent }
        guard !classFolders.isEmpty else {
            throw DataError.emptyDataset(path: root, reason: "it has no class subfolders (expected ROOT/CLASS/IMAGE)")
        }
        var paths: [String] = [], labels: [Int] = []
        var emptyClasses: [String] = []
        for (label, folder) in classFolders.enumerated() {
            var files: [String] = []
            if let walker = fileManager.enumerator(at: folder, includingPropertiesForKeys: [.isRegularFileKey],
                                                   options: [.skipsHiddenFiles]) {
                for case let url as URL in walker
                where Self.imageExtensions.contains(url.pathExtension.lowercased())
                    && (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
                    files.append(url.path)
                }
            }
            if files.isEmpty { emptyClasses.append(folder.lastPathComponent) }
            files.sort()
            paths += files
            labels += Array(repeating: label, count: files.count)
        }
        guard !paths.isEmpty else {
            throw DataError.emptyDataset(path: root, reason: "its \(classFolders.count) class folder(s) hold no images "
                                            + "with extension \(Self.imageExtensions.sorted().joined(separator: "/"))")
        }
        _ = try FFmpeg.executable()  // fail now with the install hint, not later as "every image is unreadable"
        self.root = root
        self.imageSize = imageSize
        self.classNames = classFolders.map(\.lastPathComponent)
        self.paths = paths
        self.labels = labels
        self.report = report
        self.cacheBytes = cacheBytes
        if !emptyClasses.isEmpty {
            report("warning: class folder(s) with no images in \(root): \(emptyClasses.joined(separator: ", "))")
        }
    }

    public static func printToStandardError(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }

    public var count: Int { paths.count }
    public var numClasses: Int { classNames.count }

    /// Paths found unreadable so far, with the reason.
    public var unreadable: [String: String] {
        lock.lock(); defer { lock.unlock() }
        return Dictionary(uniqueKeysWithValues: bad.map { (paths[$0.key], $0.value) })
    }

    /// Sample `index` decoded, resized and centre-cropped to `imageSize`×`imageSize` (from the cache if there).
    public func image(at index: Int) throws -> RGBImage {
        guard index >= 0 && index < count else { throw DataError.indexOutOfRange(index: index, count: count) }
        lock.lock()
        let cached = cache[index]
        lock.unlock()
        if let cached { return cached }
        let image = try RGBImage(contentsOfFile: paths[index]).centerCropResize(to: imageSize)
        lock.lock()
        if cache[index] == nil && cachedBytes + image.pixels.count <= cacheBytes {
            cache[index] = image
            cachedBytes += image.pixels.count
        }
        lock.unlock()
        return image
    }

    /// Sample `index` as CHW floats in [-1, 1] (mirrored if `flip`) and its label. Throws if the file is
    /// unreadable (without reporting it: `loadBatch` does that).
    public func sample(at index: Int, flip: Bool) throws -> (chw: [Float], label: Int) {
        let image = try image(at: index)
        return ((flip ? image.horizontallyFlipped() : image).chwFloats(), labels[index])
    }

    /// The samples at `indices`, each flipped left–right with probability 1/2, decoded in parallel. A sample that
    /// cannot be read is reported (once per file) and replaced by a uniformly drawn other sample, so the batch is
    /// full unless nearly every file is bad (then it holds fewer images, maybe none). `random` supplies first one
    /// flip draw per slot, then the replacement draws, so the result is a function of its state (given the set of
    /// bad files).
    public func loadBatch(indices: [Int], random: inout RandomStream) -> Batch {
        let flips = indices.map { _ in random.nextUniform() < 0.5 }
        var results = [RGBImage?](repeating: nil, count: indices.count)
        results.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            DispatchQueue.concurrentPerform(iterations: indices.count) { slot in
                base[slot] = self.load(indices[slot])
            }
        }
        var labels: [Int32] = []
        var images: [Float] = []
        let n = 3 * imageSize * imageSize
        images.reserveCapacity(indices.count * n)
        for slot in indices.indices {
            var index = indices[slot], image = results[slot]
            // Replacements: a bounded number of tries, so a folder of broken files cannot hang training.
            var attempts = 0
            while image == nil && attempts < 64 && isAnyReadable {
                attempts += 1
                index = random.nextInt(below: count)
                image = load(index)
            }
            guard let image else { continue }
            images += (flips[slot] ? image.horizontallyFlipped() : image).chwFloats()
            labels.append(Int32(self.labels[index]))
        }
        return Batch(images: images, labels: labels, imageSize: imageSize)
    }

    /// `DataSource` conformance: `loadBatch(indices:random:)`.
    public func batch(indices: [Int], random: inout RandomStream) -> Batch {
        loadBatch(indices: indices, random: &random)
    }

    private var isAnyReadable: Bool {
        lock.lock(); defer { lock.unlock() }
        return bad.count < count
    }

    /// The cropped image at `index`, or nil (reported the first time) if it cannot be read.
    private func load(_ index: Int) -> RGBImage? {
        precondition(index >= 0 && index < count, "sample index \(index) out of range 0..<\(count)")
        lock.lock()
        let known = bad[index] != nil
        lock.unlock()
        if known { return nil }
        do {
            return try image(at: index)
        } catch {
            lock.lock()
            let first = bad.updateValue("\(error)", forKey: index) == nil
            lock.unlock()
            if first { report("skipping unreadable image \(paths[index]): \(Self.reason(error))") }
            return nil
        }
    }

    private static func reason(_ error: Error) -> String {
        if case DataError.decodeFailed(_, let reason) = error { return reason }
        return "\(error)"
    }
}
