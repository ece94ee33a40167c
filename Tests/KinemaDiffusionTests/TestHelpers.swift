import KinemaCPU
import KinemaTensor
import XCTest

/// Largest |a − b| / (|b| + floor) over the arrays (floor keeps exact zeros comparable).
func maxRelativeError(_ a: [Double], _ b: [Double], floor: Double = 1e-300) -> Double {
    precondition(a.count == b.count, "compared arrays differ in length: \(a.count) vs \(b.count)")
    return zip(a, b).map { abs($0 - $1) / (abs($1) + floor) }.max() ?? 0
}

func maxAbsoluteError(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "compared arrays differ in length: \(a.count) vs \(b.count)")
    return zip(a, b).map { abs($0 - $1) }.max() ?? 0
}

func assertRelativelyClose(_ a: [Double], _ b: [Double], _ tolerance: Double, floor: Double = 1e-300,
                           _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    let error = maxRelativeError(a, b, floor: floor)
    XCTAssertLessThan(error, tolerance, "\(message): max relative error \(error)", file: file, line: line)
}

func assertAbsolutelyClose(_ a: [Double], _ b: [Double], _ tolerance: Double,
                           _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    let error = maxAbsoluteError(a, b)
    XCTAssertLessThan(error, tolerance, "\(message): max absolute error \(error)", file: file, line: line)
}

extension Fixture {
    /// A float fixture tensor uploaded to `backend` in `dtype`.
    func tensor(_ key: String, on backend: CPUBackend, dtype: DType = .f64) -> Tensor {
        backend.upload(doubles(key), shape: shape(key), dtype: dtype)
    }
}
