import KinemaTensor

/// The second stream of a CUDA backend: work that nothing reads until later (a layer's weight and bias gradients,
/// read only by the optimizer) queued there runs beside the backward's critical path, the input gradients, and fills
/// the SMs the critical path's kernels leave idle (the last partial wave of a product, a row kernel of one wave).
///
/// Memory: a tensor freed on the host goes back to the caching allocator at once, and the next allocation may hand
/// it to main-stream work that runs before the concurrent work has read it. So every tensor a batch's kernels touch
/// (inputs, outputs, scratch) is kept alive until the main stream has been made to wait for the batch: `maxBatches`
/// batches stay in flight (a DiT block's backward queues six), the oldest waited for as a new one is queued, all at
/// `awaitConcurrentWork` (the optimizer, host reads, `synchronize`). Scratch that kernels share across launches is
/// the stream's own (`StreamScratch`).
final class ConcurrentStream {
    let stream: UnsafeMutableRawPointer?
    /// Queued batches, oldest first: the event recorded after each and the tensors it touched.
    var batches: [(done: UnsafeMutableRawPointer, tensors: [Tensor])] = []
    /// The tensors of the batch being queued (nil when none is).
    private(set) var queueing: [Tensor]?
    let scratch = StreamScratch()
    static let maxBatches = 8

    init(stream: UnsafeMutableRawPointer?) {
        self.stream = stream
    }

    var isQueueing: Bool { queueing != nil }
    func begin() { queueing = [] }
    func end() -> [Tensor] { defer { queueing = nil }; return queueing ?? [] }
    func retain(_ tensor: Tensor) { queueing?.append(tensor) }
}

/// Scratch that the launches of one stream share, so that kernels running on two streams at once never do: cuBLASLt's
/// workspace, and the counters of kernels whose last block to finish adds up the others' partial results (Common.cuh's
/// last_block: zero, and each such kernel leaves the ones it used at zero).
final class StreamScratch {
    var workspace: Tensor?
    var counters: Tensor?
}

extension CUDABackend {
    /// Queues `body`'s work on the second stream after everything queued so far, and goes on queueing on the main
    /// stream: the two then run side by side until `awaitConcurrentWork`. For work whose results nothing reads, and
    /// whose inputs nothing overwrites, before then. Nested calls, and a backend with `runsConcurrently` off, queue
    /// in order.
    public func concurrently(_ body: () -> Void) {
        guard runsConcurrently, !(concurrent?.isQueueing ?? false) else { return body() }
        do {
            if concurrent == nil { concurrent = ConcurrentStream(stream: try Self.createStream(driver, highestPriority: false)) }
            let side = concurrent!
            try order(side.stream, after: mainStream)
            side.begin()
            stream = side.stream
            body()
            stream = mainStream
            let done = try recordEvent(on: side.stream)
            side.batches.append((done, side.end()))
            while side.batches.count > ConcurrentStream.maxBatches { try awaitOldestBatch(side) }
        } catch {
            fatalError("\(error)")
        }
    }

    /// Makes the work queued on the main stream from now on wait for all concurrent work queued so far, and lets
    /// the tensors that work touched go.
    public func awaitConcurrentWork() {
        guard let side = concurrent else { return }
        do {
            while !side.batches.isEmpty { try awaitOldestBatch(side) }
        } catch {
            fatalError("\(error)")
        }
    }

    private func awaitOldestBatch(_ side: ConcurrentStream) throws {
        let (done, _) = side.batches.removeFirst()
        try driver.check(driver.cuStreamWaitEvent(mainStream, done, 0), "cuStreamWaitEvent")
        try driver.check(driver.cuEventDestroy(done), "cuEventDestroy")  // released once the wait has passed
    }

    /// Work queued on `stream` from now on waits for the work queued on `other` so far.
    private func order(_ stream: UnsafeMutableRawPointer?, after other: UnsafeMutableRawPointer?) throws {
        let event = try recordEvent(on: other)
        try driver.check(driver.cuStreamWaitEvent(stream, event, 0), "cuStreamWaitEvent")
        try driver.check(driver.cuEventDestroy(event), "cuEventDestroy")
    }

    private func recordEvent(on stream: UnsafeMutableRawPointer?) throws -> UnsafeMutableRawPointer {
        var event: UnsafeMutableRawPointer?
        try driver.check(driver.cuEventCreate(&event, CUDADriver.eventDisableTiming), "cuEventCreate")
        try driver.check(driver.cuEventRecord(event!, stream), "cuEventRecord")
        return event!
    }

    /// Keeps `tensors` alive until the main stream waits for the batch being queued (no-op outside one): for
    /// operands passed to a library or as TMA descriptors rather than as kernel arguments.
    func retainForConcurrentWork(_ tensors: Tensor?...) {
        guard let concurrent, concurrent.isQueueing else { return }
        for case let tensor? in tensors { concurrent.retain(tensor) }
    }

    /// A non-blocking stream, of the highest priority the device offers or the lowest.
    static func createStream(_ driver: CUDADriver, highestPriority: Bool) throws -> UnsafeMutableRawPointer? {
        var stream: UnsafeMutableRawPointer?
        var least: Int32 = 0, greatest: Int32 = 0
        if let create = driver.cuStreamCreateWithPriority, let range = driver.cuCtxGetStreamPriorityRange,
           range(&least, &greatest) == 0 {
            try driver.check(create(&stream, CUDADriver.streamNonBlocking, highestPriority ? greatest : least),
                             "cuStreamCreateWithPriority")
        } else {
            try driver.check(driver.cuStreamCreate(&stream, CUDADriver.streamNonBlocking), "cuStreamCreate")
        }
        return stream
    }
}
