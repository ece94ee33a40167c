import KinemaTensor
import RealModule

extension CPUBackend: DiffusionOps {
    public func meanSquaredError(_ prediction: Tensor, target: Tensor,
                                 weights: [Double]) -> (perSample: [Double], gradient: Tensor) {
        requireSameShape("meanSquaredError", prediction, target)
        let samples = prediction.shape[0], size = prediction.count / samples
        precondition(weights.count == samples, "meanSquaredError: \(weights.count) weights for \(samples) samples")
        func run<T: CPUScalar>(_: T.Type) -> ([Double], Tensor) {
            let gradient = empty(prediction.shape, dtype: prediction.dtype)
            let p = prediction.elements(T.self), q = target.elements(T.self), g = gradient.elements(T.self)
            parallelFor(prediction.count) { range in
                for i in range { g[i] = T(2 * weights[i / size] / Double(size)) * (p[i] - q[i]) }
            }
            let losses = (0..<samples).map { s in
                blockedSum(size) { j in let d = Double(p[s * size + j] - q[s * size + j]); return d * d } / Double(size)
            }
            return (losses, gradient)
        }
        return floatSwitch(prediction.dtype, "meanSquaredError", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    public func variationalBound(epsilon: Tensor, varianceValues: Tensor, xStart: Tensor, xT: Tensor,
                                 coefficients: [VLBCoefficients], mask: Tensor?,
                                 weights: [Double]) -> (perSample: [Double], gradient: Tensor) {
        requireSameShape("variationalBound", epsilon, varianceValues, xStart, xT)
        if let mask { requireSameShape("variationalBound (mask)", epsilon, mask) }
        let samples = epsilon.shape[0], size = epsilon.count / samples
        precondition(coefficients.count == samples && weights.count == samples,
                     "variationalBound: need \(samples) coefficients and weights")
        func run<T: CPUScalar>(_: T.Type) -> ([Double], Tensor) {
            let gradient = empty(epsilon.shape, dtype: epsilon.dtype)
            var terms = [Double](repeating: 0, count: epsilon.count)
            let eps = epsilon.elements(T.self), v = varianceValues.elements(T.self)
            let x0 = xStart.elements(T.self), xt = xT.elements(T.self), g = gradient.elements(T.self)
            let m = mask.map { $0.elements(T.self) }
            terms.withUnsafeMutableBufferPointer { termBuffer in
                let term = termBuffer.baseAddress!
                parallelFor(epsilon.count, grain: 4096) { range in
                    for i in range {
                        let c = coefficients[i / size]
                        let (value, dLogVariance) = Self.boundTerm(
                            x0: Double(x0[i]), xt: Double(xt[i]), eps: Double(eps[i]), v: Double(v[i]), c)
                        let kept = m.map { Double($0[i]) } ?? 1
                        term[i] = value * kept
                        // d log σ² / d v = (log β − log σ²_posterior) / 2 for the learned-range interpolation.
                        let dv = dLogVariance * 0.5 * (c.logBeta - c.posteriorLogVariance)
                        g[i] = T(weights[i / size] * dv * kept / Double(size))
                    }
                }
            }
            let losses = (0..<samples).map { s in blockedSum(size) { terms[s * size + $0] } / Double(size) }
            return (losses, gradient)
        }
        return floatSwitch(epsilon.dtype, "variationalBound", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    /// One element's bound term in bits and its derivative with respect to the model's log variance.
    /// Computed in f64 whatever the storage: these are tiny differences of logs.
    @inline(__always)
    private static func boundTerm(x0: Double, xt: Double, eps: Double, v: Double,
                                  _ c: VLBCoefficients) -> (Double, Double) {
        let bits = 1 / Double.log(2)
        let predictedX0 = c.sqrtRecipAlphaBar * xt - c.sqrtRecipM1AlphaBar * eps
        let modelMean = c.posteriorMeanCoef1 * predictedX0 + c.posteriorMeanCoef2 * xt
        let fraction = (v + 1) / 2
        let modelLogVariance = fraction * c.logBeta + (1 - fraction) * c.posteriorLogVariance
        if !c.isFirstStep {
            // KL(q(x_{t-1}|x_t,x_0) ‖ p(x_{t-1}|x_t)) between two Gaussians.
            let trueMean = c.posteriorMeanCoef1 * x0 + c.posteriorMeanCoef2 * xt
            let meanGap = trueMean - modelMean
            let ratio = Double.exp(c.posteriorLogVariance - modelLogVariance)
            let inverseVariance = Double.exp(-modelLogVariance)
            let kl = 0.5 * (-1 + modelLogVariance - c.posteriorLogVariance + ratio + meanGap * meanGap * inverseVariance)
            let dKL = 0.5 * (1 - ratio - meanGap * meanGap * inverseVariance)
            return (kl * bits, dKL * bits)
        }
        // −log p(x_0 | x_1) under a Gaussian discretised to 256 bins on [-1, 1].
        let logScale = 0.5 * modelLogVariance
        let (logLikelihood, dLogScale) = discretizedGaussianLogLikelihood(x: x0, mean: modelMean, logScale: logScale)
        return (-logLikelihood * bits, -dLogScale * 0.5 * bits)
    }

    /// log P(x) of the bin around x, and its derivative with respect to the log scale.
    @inline(__always)
    private static func discretizedGaussianLogLikelihood(x: Double, mean: Double, logScale: Double) -> (Double, Double) {
        let inverseScale = Double.exp(-logScale)
        let centered = x - mean
        let plusIn = inverseScale * (centered + 1 / 255.0), minusIn = inverseScale * (centered - 1 / 255.0)
        let (cdfPlus, densityPlus) = approximateNormalCDF(plusIn)
        let (cdfMinus, densityMinus) = approximateNormalCDF(minusIn)
        // d(in)/d(logScale) = −in, because in ∝ exp(−logScale).
        let dPlus = densityPlus * -plusIn, dMinus = densityMinus * -minusIn
        let floor = 1e-12
        if x < -0.999 {
            return cdfPlus > floor ? (Double.log(cdfPlus), dPlus / cdfPlus) : (Double.log(floor), 0)
        }
        if x > 0.999 {
            let upper = 1 - cdfMinus
            return upper > floor ? (Double.log(upper), -dMinus / upper) : (Double.log(floor), 0)
        }
        let delta = cdfPlus - cdfMinus
        return delta > floor ? (Double.log(delta), (dPlus - dMinus) / delta) : (Double.log(floor), 0)
    }

    /// The tanh approximation of the standard normal CDF that IDDPM uses, and its derivative.
    @inline(__always)
    private static func approximateNormalCDF(_ u: Double) -> (Double, Double) {
        let a = Double.sqrt(2 / Double.pi)
        let inner = a * (u + 0.044715 * u * u * u)
        let tanh = Double.tanh(inner)
        return (0.5 * (1 + tanh), 0.5 * (1 - tanh * tanh) * a * (1 + 3 * 0.044715 * u * u))
    }
}
