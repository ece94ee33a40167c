import Foundation
import KinemaCUDA
import KinemaModels
import KinemaTensor

extension GPUCheck {
    /// im2col (exact, every dtype, strides and uneven padding) and the SD-VAE's encode and decode on the GPU
    /// against the CPU: f32 to 1e-5; bf16 weights and activations against the CPU in f32 to 1e-2 (the bf16 op bound).
    func checkVAE() {
        for (shape, kernel, stride, padding) in [([2, 3, 7, 9], 3, 1, (1, 1, 1, 1)), ([1, 5, 8, 6], 3, 2, (0, 0, 1, 1)),
                                                  ([3, 2, 5, 5], 1, 1, (0, 0, 0, 0))] {
            let (x, gx) = pair(shape)
            let plan = Im2ColPlan(inputShape: shape, kernel: (kernel, kernel), stride: stride, padding: padding)
            for dtype in [DType.f32, .bf16, .f64] {
                let ours = gpu.download(gpu.cast(gpu.im2col(gpu.cast(gx, to: dtype), plan), to: .f32))
                let want = cpu.download(cpu.cast(cpu.im2col(cpu.cast(x, to: dtype), plan), to: .f32))
                check("im2col \(dtype) \(shape) k\(kernel) s\(stride)", ours, want, tolerance: 0)
            }
        }
        let config = AutoencoderKLConfig(blockOutChannels: [32, 64], layersPerBlock: 1, normGroups: 8)
        for (dtype, tolerance) in [(DType.f32, 1e-5), (.bf16, 1e-2)] {
            let cpuVAE = AutoencoderKL(config: config, backend: cpu)
            let gpuVAE = AutoencoderKL(config: config, backend: gpu, dtype: dtype)
            loadSameRandomWeights(cpuVAE.parameters, gpuVAE.parameters, dtype: dtype)
            let (image, gImage) = pair([2, 3, 16, 24])
            let (mean, logVariance) = cpuVAE.encode(image)
            let (gMean, gLogVariance) = gpuVAE.encode(gImage)
            check("AutoencoderKL encode mean \(dtype)", gpu.download(gpu.cast(gMean, to: .f32)), cpu.download(mean),
                  tolerance: tolerance)
            check("AutoencoderKL encode log-variance \(dtype)", gpu.download(gpu.cast(gLogVariance, to: .f32)),
                  cpu.download(logVariance), tolerance: tolerance)
            let (latent, gLatent) = pair([3, 4, 8, 12])
            check("AutoencoderKL decode \(dtype)", gpu.download(gpu.cast(gpuVAE.decodeFrames(gLatent, framesPerCall: 2),
                                                                         to: .f32)),
                  cpu.download(cpuVAE.decode(latent)), tolerance: tolerance)
        }
    }
}
