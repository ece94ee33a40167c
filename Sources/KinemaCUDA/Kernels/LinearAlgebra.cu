// Bias kernels beside the cuBLASLt products.

extern "C" __global__ void add_bias_f32(const float* x, const float* bias, float* out, long long columns, long long n) {
    GRID_LOOP(i, n) out[i] = x[i] + bias[i % columns];
}

// accumulator[j] += Σ_r dy[r, j]: one thread per column adds its rows in order, so the sum is the same on every
// run (and neighbouring threads read neighbouring addresses).
extern "C" __global__ void accumulate_bias_gradient_f32(const float* dy, float* accumulator, long long rows,
                                                        long long columns) {
    long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (j >= columns) return;
    float total = 0;
    for (long long r = 0; r < rows; ++r) total += dy[r * columns + j];
    accumulator[j] += total;
}
