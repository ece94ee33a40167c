import Foundation
import KinemaCUDA
import KinemaModels
import KinemaTensor

extension GPUCheck {
    /// im2col (exact, every dtype, strides and uneven padding), the fused GroupNorm, and the SD-VAE's encode and
    /// decode (plain and tiled) on the GPU against the CPU: f32 to 1e-5; bf16 weights and activations against the CPU
    /// in f32 to 2e-2, the whole-model bound the text encoders use: as checks added before it changed its inputs,
    /// the bf16 decode measured 6.1e-3 to 1.02e-2 over seven runs and the tiled one 1.05e-2 and 1.11e-2 (the f32
    /// paths agree to 2.5e-7), so 1e-2, the single-op bound, was too tight for a model two dozen bf16 layers deep.
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
        // The fused GroupNorm: odd planes (element by element), planes of whole packs of 8 (one chunk a row, and
        // eight), with and without the affine parameters, every dtype the VAE runs in.
        for (shape, groups) in [([2, 6, 5, 3], 3), ([1, 64, 17, 9], 32), ([3, 32, 8, 8], 1), ([1, 32, 64, 64], 4)] {
            let (x, gx) = pair(shape, scale: 3), (w, gw) = pair([shape[1]]), (b, gb) = pair([shape[1]])
            for affine in [true, false] {
                let want = cpu.download(cpu.groupNorm(x, weight: affine ? w : nil, bias: affine ? b : nil, groups: groups,
                                                      eps: 1e-6))
                check("groupNorm f32 \(shape) / \(groups)\(affine ? "" : " no affine")",
                      gpu.download(gpu.groupNorm(gx, weight: affine ? gw : nil, bias: affine ? gb : nil, groups: groups,
                                                 eps: 1e-6)), want, tolerance: 1e-5)
            }
            let bf = { (t: Tensor) in self.gpu.cast(t, to: .bf16) }
            let ours = gpu.download(gpu.cast(gpu.groupNorm(bf(gx), weight: bf(gw), bias: bf(gb), groups: groups, eps: 1e-6),
                                             to: .f32))
            let rounded = { (t: Tensor) in self.cpu.cast(self.cpu.cast(t, to: .bf16), to: .f32) }
            check("groupNorm bf16 \(shape) / \(groups)", ours,
                  cpu.download(cpu.groupNorm(rounded(x), weight: rounded(w), bias: rounded(b), groups: groups, eps: 1e-6)),
                  tolerance: 1e-2)
        }
        timeGroupNorm()
        // A tile of 16 pixels (8 latents), so a [1, 4, 12, 20] latent decodes tiled.
        let config = AutoencoderKLConfig(blockOutChannels: [32, 64], layersPerBlock: 1, normGroups: 8, sampleSize: 16)
        for (dtype, tolerance) in [(DType.f32, 1e-5), (.bf16, 2e-2)] {
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
            (cpuVAE.tiling, gpuVAE.tiling) = (true, true)
            let (wide, gWide) = pair([1, 4, 12, 20])
            check("AutoencoderKL tiled decode \(dtype)", gpu.download(gpu.cast(gpuVAE.decode(gWide), to: .f32)),
                  cpu.download(cpuVAE.decode(wide)), tolerance: tolerance)
        }
    }

    /// The fused GroupNorm, bf16 on the sizes of an SD-VAE decoder at 512 px: mean of 20 after warm-up. (The
    /// composition it replaced, a LayerNorm of each group, cannot run here: its rows of 2¹⁶ columns are beyond the
    /// row kernels' 4 096, which the -Ounchecked builds never checked.)
    private func timeGroupNorm() {
        for shape in [[1, 512, 64, 64], [1, 256, 256, 256], [1, 128, 512, 512]] {
            let x = gpu.cast(gpu.randomNormal(shape, dtype: .f32, seed: 3, offset: 0), to: .bf16)
            let w = gpu.cast(gpu.upload([Float](repeating: 1.5, count: shape[1]), shape: [shape[1]], dtype: .f32), to: .bf16)
            let b = gpu.cast(gpu.upload([Float](repeating: 0.5, count: shape[1]), shape: [shape[1]], dtype: .f32), to: .bf16)
            func milliseconds(_ body: () -> Void) -> Double {
                for _ in 0..<3 { body() }
                return gpu.measureSeconds { for _ in 0..<20 { body() } } * 1000 / 20
            }
            let fused = milliseconds { _ = gpu.groupNorm(x, weight: w, bias: b, groups: 32, eps: 1e-6) }
            let bytes = Double(2 * 2 * shape.reduce(1, *))  // one read and one write of bf16
            print(String(format: "time groupNorm bf16 %@ / 32 groups: fused %.3f ms (%.0f GB/s)", "\(shape)", fused,
                         bytes / fused / 1e6))
        }
    }
}
