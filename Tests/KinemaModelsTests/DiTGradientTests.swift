import KinemaCPU
import KinemaModels
import KinemaTensor
import KinemaTestSupport
import XCTest

/// The hand-written backward of a whole DiT against central finite differences, in float64.
final class DiTGradientTests: XCTestCase {
    func testWholeTinyDiTGradients() throws {
        let backend = CPUBackend()
        let config = DiTConfig(inputSize: 4, patchSize: 2, inChannels: 2, hiddenSize: 16, depth: 2, numHeads: 2,
                               mlpRatio: 2, numClasses: 3, learnSigma: true)
        let model = try DiT(config: config, backend: backend, dtype: .f64)
        // The paper's zero initialisation would leave most paths dead; random weights exercise every one. They are
        // written into the arena's storage, which the model's stacked adaLN product reads through one view.
        for (index, parameter) in model.parameters.enumerated() {
            backend.copy(randomTensor(parameter.value.shape, seed: UInt64(100 + index), backend: backend, scale: 0.4),
                         into: parameter.value)
        }
        let x = randomTensor([2, 2, 4, 4], seed: 1, backend: backend)
        let t = backend.upload([3.0, 611.0], shape: [2], dtype: .f64)
        let y = backend.upload([2, 3] as [Int32], shape: [2])  // 3 is the null class
        let weights = randomTensor([2, 4, 4, 4], seed: 2, backend: backend)

        model.zeroGradients()
        let (out, cache) = model.forward(x, timesteps: t, labels: y)
        model.backward(weights, cache)
        checkGradients(model.parameters.map { ($0.name, $0.value, $0.gradient) }, backend: backend,
                       relativeTolerance: 1e-6) {
            weightedSum(model(x, timesteps: t, labels: y), weights, backend: backend)
        }
        XCTAssertEqual(out.shape, [2, 4, 4, 4])
    }
}
