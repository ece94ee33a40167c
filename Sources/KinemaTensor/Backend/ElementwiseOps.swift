public enum UnaryOp: Sendable {
    case exp, log, sqrt, square, negate, tanh, abs
    /// The exact GELU, x·Φ(x) = x·(1 + erf(x/√2))/2 (BERT's and PyTorch's default "gelu"; DiT's MLP uses the tanh
    /// approximation, `NNOps.gelu`). Forward only: the text encoders that use it are frozen.
    case geluErf
    /// max(x, 0) (T5's feed-forward) and CLIP's "quick_gelu", x·σ(1.702·x); forward only, like `geluErf`.
    case relu, quickGelu
}

/// Elementwise arithmetic and whole-tensor reductions. Binary ops take tensors of equal shape.
public protocol ElementwiseOps: AnyObject {
    func add(_ a: Tensor, _ b: Tensor) -> Tensor
    func sub(_ a: Tensor, _ b: Tensor) -> Tensor
    func mul(_ a: Tensor, _ b: Tensor) -> Tensor
    /// a · s + t
    func affine(_ a: Tensor, scale s: Double, shift t: Double) -> Tensor
    func unary(_ op: UnaryOp, _ x: Tensor) -> Tensor
    func clamp(_ x: Tensor, min: Double, max: Double) -> Tensor

    /// y += alpha · x, in place.
    func axpy(_ alpha: Double, _ x: Tensor, _ y: Tensor)
    /// x *= s, in place.
    func scaleInPlace(_ x: Tensor, by s: Double)
    /// out[i, …] = a[i] · x[i, …] + b[i] · y[i, …] with one coefficient per row of the first axis:
    /// the per-sample arithmetic of every diffusion sampler and of q(x_t | x_0).
    func rowwiseAxpby(_ a: [Double], _ x: Tensor, _ b: [Double], _ y: Tensor) -> Tensor

    /// Σ x and Σ x², accumulated in f64 in a fixed order, so the result does not depend on the thread count.
    func sum(_ x: Tensor) -> Double
    func sumOfSquares(_ x: Tensor) -> Double
}
