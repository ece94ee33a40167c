/// Everything a layer, a sampler or an optimizer asks of a device. Each family of ops is its own protocol, in its
/// own file, so a backend implements them piece by piece (the CPU backend in `KinemaCPU`, CUDA later).
///
/// Conventions for every op:
/// - inputs are contiguous tensors on this backend's device; outputs are new contiguous tensors of the input's
///   dtype unless the op says otherwise;
/// - ops named `…Backward` *accumulate* parameter gradients into the tensors they are given (`+=`) and return
///   fresh gradients for their inputs, so a parameter used twice, or gradient accumulation, needs nothing extra;
/// - shape mismatches are programming errors and stop with a message naming the op and the shapes.
public protocol Backend: MemoryOps, ElementwiseOps, LinearAlgebraOps, NNOps, DiffusionOps, OptimizerOps,
                         RandomOps {
    /// A short human name, e.g. "cpu (2 threads, OpenBLAS)".
    var name: String { get }
}
