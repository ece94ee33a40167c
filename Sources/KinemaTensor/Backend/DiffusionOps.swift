/// The per-sample constants of one training example's variational bound term, read from the schedule at its t.
public struct VLBCoefficients: Sendable, Equatable {
    /// q(x_{t-1} | x_t, x_0) mean = coef1 · x_0 + coef2 · x_t, and its clipped log variance.
    public var posteriorMeanCoef1: Double
    public var posteriorMeanCoef2: Double
    public var posteriorLogVariance: Double
    /// The learned-range variance interpolates log σ² between posteriorLogVariance (min) and log β_t (max).
    public var logBeta: Double
    /// x_0 prediction from ε: x_0 = sqrtRecipAlphaBar · x_t − sqrtRecipM1AlphaBar · ε.
    public var sqrtRecipAlphaBar: Double
    public var sqrtRecipM1AlphaBar: Double
    /// At t = 0 the term is the discretised Gaussian decoder NLL instead of the KL.
    public var isFirstStep: Bool

    public init(posteriorMeanCoef1: Double, posteriorMeanCoef2: Double, posteriorLogVariance: Double, logBeta: Double,
                sqrtRecipAlphaBar: Double, sqrtRecipM1AlphaBar: Double, isFirstStep: Bool) {
        self.posteriorMeanCoef1 = posteriorMeanCoef1
        self.posteriorMeanCoef2 = posteriorMeanCoef2
        self.posteriorLogVariance = posteriorLogVariance
        self.logBeta = logBeta
        self.sqrtRecipAlphaBar = sqrtRecipAlphaBar
        self.sqrtRecipM1AlphaBar = sqrtRecipM1AlphaBar
        self.isFirstStep = isFirstStep
    }
}

/// The loss terms of diffusion training, fused so the GPU computes each in one pass.
public protocol DiffusionOps: AnyObject {
    /// Per-sample mean over all non-batch elements of (prediction − target)², and the gradient of
    /// Σ_i weights[i] · loss_i with respect to the prediction.
    func meanSquaredError(_ prediction: Tensor, target: Tensor, weights: [Double]) -> (perSample: [Double], gradient: Tensor)

    /// IDDPM's variational-bound term in bits per dimension, per sample, for learned-range variance:
    /// the ε prediction is treated as a constant (DiT detaches it), so only `varianceValues` (the model's second
    /// output half, in [-1, 1]) receives the gradient of Σ_i weights[i] · vb_i. `mask` (shaped like the others, 1 or
    /// 0; nil: all 1) multiplies each element's term and gradient: 0 leaves an element out (image-to-video's
    /// conditioning frames), while vb_i stays the sum over the sample's elements divided by all of them.
    func variationalBound(epsilon: Tensor, varianceValues: Tensor, xStart: Tensor, xT: Tensor,
                          coefficients: [VLBCoefficients], mask: Tensor?,
                          weights: [Double]) -> (perSample: [Double], gradient: Tensor)
}
