import KinemaModels
import KinemaTensor

extension GPUCheck {
    /// The frozen text encoders (BERT, T5 with its position bias, CLIP with its causal mask and pooling) on the GPU
    /// against the CPU, the same random weights and a batch with a padded row: f32 to 1e-5; bf16 weights and
    /// activations against the CPU in f32 to 2e-2: a whole model is a dozen bf16 roundings deep (the training-step
    /// checks allow 3e-2), and CLIP's pooled rows, a few of the hidden state's, measured 1.1e-2 against their own
    /// smaller maximum where the whole state measured 6.6e-3.
    func checkTextEncoders() {
        let (batch, length, vocabulary) = (3, 40, 300)
        let ids = (0..<(batch * length)).map { Int32(($0 * 7919 + 13) % (vocabulary - 1)) }
        let mask = (0..<(batch * length)).map { Int32($0 / length == 1 && $0 % length >= 25 ? 0 : 1) }
        let cpuIDs = cpu.upload(ids, shape: [batch, length]), gpuIDs = gpu.upload(ids, shape: [batch, length])
        let cpuMask = cpu.upload(mask, shape: [batch, length]), gpuMask = gpu.upload(mask, shape: [batch, length])
        func compare(_ name: String, _ ours: Tensor, _ reference: Tensor, _ tolerance: Double) {
            check(name, gpu.download(gpu.cast(ours, to: .f32)), cpu.download(reference), tolerance: tolerance)
        }
        for (dtype, tolerance) in [(DType.f32, 1e-5), (.bf16, 2e-2)] {
            let t5Config = T5Config(vocabSize: vocabulary, dModel: 64, keyValueDim: 16, feedForwardDim: 96, layers: 2,
                                    heads: 6, relativeBuckets: 32, relativeMaxDistance: 128, activation: .geluNew,
                                    gated: true)
            let (cpuT5, gpuT5) = (T5Encoder(config: t5Config, backend: cpu),
                                  T5Encoder(config: t5Config, backend: gpu, dtype: dtype))
            loadSameRandomWeights(cpuT5.parameters, gpuT5.parameters, dtype: dtype)
            compare("T5 encoder \(dtype)", gpuT5.forward(inputIDs: gpuIDs, attentionMask: gpuMask),
                    cpuT5.forward(inputIDs: cpuIDs, attentionMask: cpuMask), tolerance)

            let clipConfig = CLIPTextConfig(vocabSize: vocabulary, hiddenSize: 64, intermediateSize: 96, layers: 2,
                                            heads: 4, maxPositions: 77, eosTokenID: vocabulary - 1)
            let (cpuCLIP, gpuCLIP) = (CLIPTextEncoder(config: clipConfig, backend: cpu),
                                      CLIPTextEncoder(config: clipConfig, backend: gpu, dtype: dtype))
            loadSameRandomWeights(cpuCLIP.parameters, gpuCLIP.parameters, dtype: dtype)
            let c = cpuCLIP.forward(inputIDs: cpuIDs, ids: ids, attentionMask: cpuMask)
            let g = gpuCLIP.forward(inputIDs: gpuIDs, ids: ids, attentionMask: gpuMask)
            compare("CLIP text last_hidden_state \(dtype)", g.lastHiddenState, c.lastHiddenState, tolerance)
            compare("CLIP text pooler_output \(dtype)", g.pooled, c.pooled, tolerance)

            let bertConfig = BertConfig(vocabSize: vocabulary, hiddenSize: 64, layers: 2, heads: 4, intermediateSize: 96,
                                        maxPositions: 64)
            let (cpuBert, gpuBert) = (BertEncoder(config: bertConfig, backend: cpu),
                                      BertEncoder(config: bertConfig, backend: gpu, dtype: dtype))
            loadSameRandomWeights(cpuBert.parameters, gpuBert.parameters, dtype: dtype)
            compare("BERT last_hidden_state \(dtype)", gpuBert.forward(inputIDs: gpuIDs, attentionMask: gpuMask).lastHiddenState,
                    cpuBert.forward(inputIDs: cpuIDs, attentionMask: cpuMask).lastHiddenState, tolerance)
        }
    }
}
