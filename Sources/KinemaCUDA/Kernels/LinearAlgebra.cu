// Bias kernels beside the cuBLASLt products (bias gradients are column sums, in NN.cu).

extern "C" __global__ void add_bias(const T* x, const T* bias, T* out, long long columns, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) st(out, i, ld(x, i) + ld(bias, i % columns));
}
