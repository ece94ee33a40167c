import Foundation

/// Where a step's device time goes: while a backend's `profiler` is set, every kernel launch and every cuBLASLt
/// product is bracketed by events on the stream, and `report` adds up the elapsed times by name. The events cost a
/// little time themselves, so profile in a separate run from the one whose timing you report (`kinema bench
/// --profile`).
/// Host time spent in one kind of driver call, and how many calls.
struct HostTime {
    var seconds = 0.0
    var calls = 0
}

public final class KernelProfiler {
    struct Record {
        let name: String
        let start, end: UnsafeMutableRawPointer
    }

    let driver: CUDADriver
    var records: [Record] = []
    /// Host seconds inside the driver's launch call and inside cuBLASLt's matmul call, and their counts: where the
    /// CPU's share of a step goes when the step is host-bound.
    var launchSeconds = HostTime(), matmulSeconds = HostTime()

    init(driver: CUDADriver) {
        self.driver = driver
    }

    /// Events before and after `body`'s work on `stream`, filed under `name`.
    func measure(_ name: String, stream: UnsafeMutableRawPointer?, _ body: () throws -> Void) rethrows {
        var start: UnsafeMutableRawPointer?, end: UnsafeMutableRawPointer?
        _ = driver.cuEventCreate(&start, 0)
        _ = driver.cuEventCreate(&end, 0)
        _ = driver.cuEventRecord(start!, stream)
        try body()
        _ = driver.cuEventRecord(end!, stream)
        records.append(Record(name: name, start: start!, end: end!))
    }

    /// The time per name over everything recorded, divided by `steps`, largest first, as lines of a table; the
    /// events are released and the record starts afresh.
    public func report(steps: Int, top: Int = 40) -> String {
        var totals: [String: (calls: Int, milliseconds: Double)] = [:]
        for record in records {
            _ = driver.cuEventSynchronize(record.end)
            var milliseconds: Float = 0
            _ = driver.cuEventElapsedTime(&milliseconds, record.start, record.end)
            totals[record.name, default: (0, 0)].calls += 1
            totals[record.name, default: (0, 0)].milliseconds += Double(milliseconds)
            _ = driver.cuEventDestroy(record.start)
            _ = driver.cuEventDestroy(record.end)
        }
        records.removeAll()
        let host = String(format: "host per step: %.2f ms in %d cuLaunchKernel calls, %.2f ms in %d cublasLtMatmul calls",
                          launchSeconds.seconds * 1000 / Double(steps), launchSeconds.calls / Swift.max(steps, 1),
                          matmulSeconds.seconds * 1000 / Double(steps), matmulSeconds.calls / Swift.max(steps, 1))
        (launchSeconds, matmulSeconds) = (HostTime(), HostTime())
        let total = totals.values.map(\.milliseconds).reduce(0, +) / Double(steps)
        var lines = [String(format: "profile: %.2f ms of kernels per step, %d launches per step",
                            total, totals.values.map(\.calls).reduce(0, +) / Swift.max(steps, 1)), host]
        for (name, value) in totals.sorted(by: { $0.value.milliseconds > $1.value.milliseconds }).prefix(top) {
            let perStep = value.milliseconds / Double(steps)
            lines.append(String(format: "  %8.3f ms %5.1f%% %6d× %@", perStep, 100 * perStep / Swift.max(total, 1e-9),
                                value.calls / Swift.max(steps, 1), name))
        }
        return lines.joined(separator: "\n")
    }
}
