import KinemaTensor

/// A 2D convolution with PyTorch's weight layout [O, C, kh, kw] (checkpoints load as they are), as one matrix
/// product over the patches `im2col` gathers (a 1×1 kernel skips the gather). Forward only: it serves the frozen
/// VAE. Padding may differ per side (diffusers' downsampler pads only bottom and right).
public final class Conv2d: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let inChannels, outChannels, kernelSize, stride: Int
    public let padding: (top: Int, left: Int, bottom: Int, right: Int)
    let backend: any Backend

    public var parameters: [Parameter] { bias.map { [weight, $0] } ?? [weight] }

    public init(backend: any Backend, name: String, inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int = 1,
                padding: (top: Int, left: Int, bottom: Int, right: Int)? = nil, bias: Bool = true, dtype: DType,
                seed: UInt64 = 0) {
        self.backend = backend
        (self.inChannels, self.outChannels, self.kernelSize, self.stride) = (inChannels, outChannels, kernelSize, stride)
        let same = kernelSize / 2
        self.padding = padding ?? (same, same, same, same)
        let fanIn = inChannels * kernelSize * kernelSize, shape = [outChannels, inChannels, kernelSize, kernelSize]
        let weightName = "\(name).weight"
        weight = Parameter(name: weightName, value: backend.upload(
            Initializers.xavierUniform(shape: [outChannels, fanIn], fanIn: fanIn, fanOut: outChannels * kernelSize * kernelSize,
                                       seed: seed, stream: initializerStream(for: weightName)),
            shape: shape, dtype: dtype), backend: backend)
        self.bias = bias ? Parameter(name: "\(name).bias", shape: [outChannels], constant: 0, dtype: dtype,
                                     backend: backend) : nil
    }

    /// x [B, C, H, W] → [B, O, Ho, Wo].
    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == inChannels,
                     "\(weight.name): input must be [B, \(inChannels), H, W], got \(x.shape)")
        let (batch, height, width) = (x.shape[0], x.shape[2], x.shape[3])
        let matrix = weight.value.reshaped([outChannels, inChannels * kernelSize * kernelSize])
        let pointwise = kernelSize == 1 && stride == 1 && padding == (0, 0, 0, 0)
        let plan = Im2ColPlan(inputShape: x.shape, kernel: (kernelSize, kernelSize), stride: stride, padding: padding)
        let columns = pointwise
            ? backend.permute(x.reshaped([batch, inChannels, height * width]), [0, 2, 1]).reshaped([-1, inChannels])
            : backend.im2col(x, plan)
        let (oh, ow) = pointwise ? (height, width) : (plan.outputHeight, plan.outputWidth)
        let rows = backend.linear(columns, weight: matrix, bias: bias?.value, gelu: false).y
        return backend.permute(rows.reshaped([batch, oh * ow, outChannels]), [0, 2, 1])
            .reshaped([batch, outChannels, oh, ow])
    }
}
