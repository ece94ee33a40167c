import Foundation
import KinemaTensor

/// A discrete Gaussian diffusion schedule and every array IDDPM derives from its β's, in f64 on the host.
///
/// A schedule may be a respacing of a longer one (IDDPM's `SpacedDiffusion`): then `timestepMap[i]` is the
/// original timestep that index `i` stands for, and a model is always called with that original timestep
/// (IDDPM's `_WrappedModel` with `rescale_timesteps=False`). For an unspaced schedule the map is the identity.
public struct NoiseSchedule: Sendable, Equatable {
    public let betas: [Double]
    /// Respaced index → original timestep.
    public let timestepMap: [Int]
    /// Number of steps of the original (unspaced) process.
    public let originalStepCount: Int

    public let alphasCumprod: [Double]
    public let alphasCumprodPrev: [Double]
    public let alphasCumprodNext: [Double]
    public let sqrtAlphasCumprod: [Double]
    public let sqrtOneMinusAlphasCumprod: [Double]
    public let logOneMinusAlphasCumprod: [Double]
    public let sqrtRecipAlphasCumprod: [Double]
    public let sqrtRecipM1AlphasCumprod: [Double]
    /// Variance of q(x_{t-1} | x_t, x_0); 0 at t = 0.
    public let posteriorVariance: [Double]
    /// log of `posteriorVariance` with its first entry replaced by the second (the log of 0 is useless);
    /// log β_0 for a one-step schedule.
    public let posteriorLogVarianceClipped: [Double]
    public let posteriorMeanCoef1: [Double]
    public let posteriorMeanCoef2: [Double]
    public let logBetas: [Double]

    /// Number of steps of this schedule.
    public var count: Int { betas.count }

    /// All derived arrays for `betas`, as IDDPM's `GaussianDiffusion.__init__` computes them.
    public init(betas: [Double], timestepMap: [Int]? = nil, originalStepCount: Int? = nil) {
        precondition(!betas.isEmpty, "NoiseSchedule: no betas")
        precondition(betas.allSatisfy { $0 > 0 && $0 <= 1 }, "NoiseSchedule: betas must lie in (0, 1]")
        let map = timestepMap ?? Array(0..<betas.count)
        precondition(map.count == betas.count, "NoiseSchedule: timestep map has \(map.count) entries for \(betas.count) betas")
        let n = betas.count
        self.betas = betas
        self.timestepMap = map
        self.originalStepCount = originalStepCount ?? betas.count

        var cumulative = [Double](repeating: 0, count: n)
        var product = 1.0
        for i in 0..<n {
            product *= 1 - betas[i]
            cumulative[i] = product
        }
        let acp = cumulative
        let prev = [1.0] + acp.dropLast()
        let next = Array(acp.dropFirst()) + [0.0]
        alphasCumprod = acp
        alphasCumprodPrev = prev
        alphasCumprodNext = next
        sqrtAlphasCumprod = acp.map { $0.squareRoot() }
        sqrtOneMinusAlphasCumprod = acp.map { (1 - $0).squareRoot() }
        logOneMinusAlphasCumprod = acp.map { Foundation.log(1 - $0) }
        sqrtRecipAlphasCumprod = acp.map { (1 / $0).squareRoot() }
        sqrtRecipM1AlphasCumprod = acp.map { (1 / $0 - 1).squareRoot() }

        let variance = (0..<n).map { (i: Int) -> Double in betas[i] * (1 - prev[i]) / (1 - acp[i]) }
        posteriorVariance = variance
        // IDDPM leaves this empty for a one-step schedule; log β_0 keeps it indexable (no noise is added at t = 0).
        posteriorLogVarianceClipped = n > 1 ? ([variance[1]] + variance.dropFirst()).map { Foundation.log($0) }
                                            : [Foundation.log(betas[0])]
        posteriorMeanCoef1 = (0..<n).map { (i: Int) -> Double in betas[i] * prev[i].squareRoot() / (1 - acp[i]) }
        posteriorMeanCoef2 = (0..<n).map { (i: Int) -> Double in
            let alpha: Double = 1 - betas[i]
            return (1 - prev[i]) * alpha.squareRoot() / (1 - acp[i])
        }
        logBetas = betas.map { Foundation.log($0) }
    }

    /// IDDPM's `get_named_beta_schedule("linear", steps)`: β from `scale·1e-4` to `scale·0.02` with
    /// `scale = 1000 / steps`, spaced as `numpy.linspace` spaces them (start + i·step, last entry exactly the end).
    public static func linearBetas(steps: Int) -> [Double] {
        precondition(steps >= 1, "linearBetas: need at least one step")
        let scale = 1000 / Double(steps)
        let start = scale * 0.0001, end = scale * 0.02
        if steps == 1 { return [start] }
        let step = (end - start) / Double(steps - 1)
        var betas = (0..<steps).map { Double($0) * step + start }
        betas[steps - 1] = end
        return betas
    }

    /// The plain linear schedule (β's straight from `linearBetas`).
    public static func linear(steps: Int = 1000) -> NoiseSchedule {
        NoiseSchedule(betas: linearBetas(steps: steps))
    }

    /// The schedule DiT trains with: `create_diffusion(timestep_respacing="")`, i.e. the linear schedule passed
    /// through `SpacedDiffusion` keeping every step (its β's are recomputed from ᾱ, equal to the linear ones up to
    /// rounding).
    public static func dit(steps: Int = 1000) -> NoiseSchedule {
        linear(steps: steps).respaced(keeping: Array(0..<steps))
    }

    /// A schedule over the kept timesteps of this one (IDDPM's `SpacedDiffusion`): for each kept i in order,
    /// β'_i = 1 − ᾱ_i / ᾱ_(previous kept), with ᾱ of "before the first" = 1. The map composes with this schedule's
    /// own map, so it always points at timesteps of the original process.
    public func respaced(keeping timesteps: [Int]) -> NoiseSchedule {
        let kept = Array(Set(timesteps)).sorted()
        precondition(!kept.isEmpty && kept.first! >= 0 && kept.last! < count,
                     "respaced: timesteps must lie in 0..<\(count)")
        var last = 1.0
        var newBetas: [Double] = []
        newBetas.reserveCapacity(kept.count)
        for i in kept {
            newBetas.append(1 - alphasCumprod[i] / last)
            last = alphasCumprod[i]
        }
        return NoiseSchedule(betas: newBetas, timestepMap: kept.map { timestepMap[$0] },
                             originalStepCount: originalStepCount)
    }

    /// A schedule respaced by an IDDPM section string ("250", "ddim25", "10,15,20"); "" keeps every step.
    public func respaced(_ sectionCounts: String) throws -> NoiseSchedule {
        respaced(keeping: try Respacing.spaceTimesteps(count, sectionCounts))
    }

    /// The per-sample constants of the variational-bound term at index `t` (learned-range variance).
    public func vlbCoefficients(at t: Int) -> VLBCoefficients {
        VLBCoefficients(posteriorMeanCoef1: posteriorMeanCoef1[t], posteriorMeanCoef2: posteriorMeanCoef2[t],
                        posteriorLogVariance: posteriorLogVarianceClipped[t], logBeta: logBetas[t],
                        sqrtRecipAlphaBar: sqrtRecipAlphasCumprod[t], sqrtRecipM1AlphaBar: sqrtRecipM1AlphasCumprod[t],
                        isFirstStep: t == 0)
    }
}

public enum DiffusionError: Error, CustomStringConvertible, Equatable {
    case invalidRespacing(String)

    public var description: String {
        switch self {
        case .invalidRespacing(let reason): return "invalid timestep respacing: \(reason)"
        }
    }
}

/// IDDPM's `space_timesteps`: which timesteps of a `steps`-step process a shorter sampler keeps.
public enum Respacing {
    /// - "N1,N2,…": the process is cut into equal sections (the first `steps % sections` one step longer) and
    ///   section k keeps N_k timesteps evenly strided over it (positions rounded half-to-even, as Python's round);
    /// - "ddimN": the fixed integer stride of the DDIM paper, `range(0, steps, stride)` with exactly N entries;
    /// - "": every step.
    /// Returns the kept timesteps in increasing order.
    public static func spaceTimesteps(_ steps: Int, _ sectionCounts: String) throws -> [Int] {
        let spec = sectionCounts.trimmingCharacters(in: .whitespaces)
        if spec.isEmpty { return Array(0..<steps) }
        if spec.hasPrefix("ddim") {
            guard let desired = Int(spec.dropFirst(4)), desired > 0 else {
                throw DiffusionError.invalidRespacing("'\(spec)': expected ddimN")
            }
            for stride in Swift.stride(from: 1, to: steps, by: 1) where (steps + stride - 1) / stride == desired {
                return Array(Swift.stride(from: 0, to: steps, by: stride))
            }
            throw DiffusionError.invalidRespacing("cannot create exactly \(desired) steps out of \(steps) with an integer stride")
        }
        var counts: [Int] = []
        for part in spec.split(separator: ",", omittingEmptySubsequences: false) {
            guard let value = Int(part.trimmingCharacters(in: .whitespaces)), value >= 0 else {
                throw DiffusionError.invalidRespacing("'\(spec)': expected comma-separated step counts")
            }
            counts.append(value)
        }
        let sizePer = steps / counts.count, extra = steps % counts.count
        var start = 0
        var kept = Set<Int>()
        for (i, sectionCount) in counts.enumerated() {
            let size = sizePer + (i < extra ? 1 : 0)
            if size < sectionCount {
                throw DiffusionError.invalidRespacing("cannot divide a section of \(size) steps into \(sectionCount)")
            }
            let stride = sectionCount <= 1 ? 1.0 : Double(size - 1) / Double(sectionCount - 1)
            var position = 0.0
            for _ in 0..<sectionCount {
                kept.insert(start + Int(position.rounded(.toNearestOrEven)))
                position += stride
            }
            start += size
        }
        return kept.sorted()
    }
}
