import Foundation
import KinemaTensor
import RealModule

/// Table lookups (class labels) and the sinusoidal timestep features.
extension CPUBackend {
    public func embedding(_ table: Tensor, indices: Tensor) -> Tensor {
        let width = checkedEmbedding("embedding", table, indices)
        let out = empty(indices.shape + [width], dtype: table.dtype)
        // A row copy needs no arithmetic, so any dtype works (bf16 tables included).
        let rowBytes = width * table.dtype.byteSize
        let index = indices.elements(Int32.self)
        for i in 0..<indices.count {
            (out.address + i * rowBytes).copyMemory(from: table.address + Int(index[i]) * rowBytes, byteCount: rowBytes)
        }
        return out
    }

    public func embeddingBackward(_ dOut: Tensor, indices: Tensor, into dTable: Tensor) {
        let width = checkedEmbedding("embeddingBackward", dTable, indices)
        precondition(dOut.shape == indices.shape + [width] && dOut.dtype == dTable.dtype,
                     "embeddingBackward: dOut \(dOut.shape) \(dOut.dtype) does not fit indices \(indices.shape) and table \(dTable.shape) \(dTable.dtype)")
        func run<T: CPUScalar>(_: T.Type) {
            let source = dOut.elements(T.self), target = dTable.elements(T.self), index = indices.elements(Int32.self)
            let count = indices.count
            // Split over columns; each column takes the indices in order, so repeated labels add up in a fixed
            // order whatever the thread count.
            parallelFor(width, grain: 64) { columns in
                for i in 0..<count {
                    let row = Int(index[i]) * width
                    for j in columns { target[row + j] += source[i * width + j] }
                }
            }
        }
        floatSwitch(dTable.dtype, "embeddingBackward", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    /// Checks the table is [V, D] and the indices i32 within 0..<V; returns D.
    private func checkedEmbedding(_ op: String, _ table: Tensor, _ indices: Tensor) -> Int {
        precondition(table.rank == 2, "\(op): the table must be [V, D], got \(table.shape)")
        precondition(indices.dtype == .i32, "\(op): indices must be i32, got \(indices.dtype)")
        let rows = table.shape[0], index = indices.elements(Int32.self)
        // Indices are data (labels, tokens), not a programming error: fatalError prints which one in a release
        // build, where a failed precondition only traps.
        for i in 0..<indices.count where index[i] < 0 || Int(index[i]) >= rows {
            fatalError("\(op): index \(index[i]) at position \(i) is outside the table's \(rows) rows")
        }
        return table.shape[1]
    }

    public func timestepEmbedding(_ t: Tensor, dim: Int, maxPeriod: Double, frequencyShift: Double) -> Tensor {
        precondition(t.rank == 1 && dim > 0, "timestepEmbedding: t must be [B] and dim positive, got \(t.shape), \(dim)")
        let half = dim / 2
        func run<T: CPUScalar>(_: T.Type) -> Tensor {
            let out = empty([t.shape[0], dim], dtype: t.dtype)
            let times = t.elements(T.self), target = out.elements(T.self)
            // Frequencies in f64 rounded once; the product and the trig in the compute dtype, as DiT's f32 code does.
            let frequencies = (0..<half).map { T(Double.exp(-Double.log(maxPeriod) * Double($0) / (Double(half) - frequencyShift))) }
            for b in 0..<t.shape[0] {
                let row = target + b * dim
                for i in 0..<half {
                    let argument = times[b] * frequencies[i]
                    row[i] = T.cos(argument)
                    row[half + i] = T.sin(argument)
                }
                if dim % 2 == 1 { row[dim - 1] = 0 }
            }
            return out
        }
        return floatSwitch(t.dtype, "timestepEmbedding", f32: { run(Float.self) }, f64: { run(Double.self) })
    }
}
