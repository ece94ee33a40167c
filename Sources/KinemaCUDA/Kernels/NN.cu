// Kinema's NN kernels (f32): LayerNorm, adaLN modulation, gated residual, activations, embeddings and timestep
// features (attention is in Attention.cu and FlashAttention.cu). Compiled at run time by NVRTC.
//
// Determinism: every reduction runs in a fixed order (fixed-tree block reductions, or one thread walking its rows
// in order); no atomics, so results are bit-identical from run to run.

// MARK: LayerNorm

// One block per row; two passes in f64 (mean, then the biased variance around it). weight/bias may be null.
extern "C" __global__ void layernorm_forward_f32(const float* x, const float* weight, const float* bias, float* y,
                                                 float* mean, float* rstd, long long rows, int width, double eps) {
    __shared__ double shared[MAX_THREADS];
    BLOCK_LOOP(row, rows) {
        const float* source = x + row * width;
        float* out = y + row * width;
        double total = 0;
        for (int j = threadIdx.x; j < width; j += blockDim.x) total += (double)source[j];
        double mu = block_sum(total, shared) / (double)width;
        double squares = 0;
        for (int j = threadIdx.x; j < width; j += blockDim.x) { double d = (double)source[j] - mu; squares += d * d; }
        double r = 1.0 / sqrt(block_sum(squares, shared) / (double)width + eps);
        float m = (float)mu, s = (float)r;
        if (threadIdx.x == 0) { mean[row] = m; rstd[row] = s; }
        for (int j = threadIdx.x; j < width; j += blockDim.x) {
            float v = (source[j] - m) * s;
            if (weight) v = v * weight[j];
            if (bias) v = v + bias[j];
            out[j] = v;
        }
    }
}

// dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)), ĝ = dy ⊙ weight; one block per row, sums in f64.
extern "C" __global__ void layernorm_backward_dx_f32(const float* dy, const float* x, const float* weight,
                                                     const float* mean, const float* rstd, float* dx,
                                                     long long rows, int width) {
    __shared__ double shared[MAX_THREADS];
    BLOCK_LOOP(row, rows) {
        const float* g = dy + row * width;
        const float* source = x + row * width;
        float m = mean[row], s = rstd[row];
        double sumG = 0, sumGX = 0;
        for (int j = threadIdx.x; j < width; j += blockDim.x) {
            float gj = weight ? g[j] * weight[j] : g[j];
            sumG += (double)gj;
            sumGX += (double)(gj * (source[j] - m) * s);
        }
        float meanG = (float)(block_sum(sumG, shared) / (double)width);
        float meanGX = (float)(block_sum(sumGX, shared) / (double)width);
        for (int j = threadIdx.x; j < width; j += blockDim.x) {
            float gj = weight ? g[j] * weight[j] : g[j];
            float xhat = (source[j] - m) * s;
            dx[row * width + j] = s * (gj - meanG - xhat * meanGX);
        }
    }
}

// dWeight[j] += Σ_rows dy · x̂, dBias[j] += Σ_rows dy: one thread per column, rows in order, f64 sums.
extern "C" __global__ void layernorm_backward_params_f32(const float* dy, const float* x, const float* mean,
                                                         const float* rstd, float* dWeight, float* dBias,
                                                         long long rows, int width) {
    GRID_LOOP(j, (long long)width) {
        double sumDyX = 0, sumDy = 0;
        for (long long row = 0; row < rows; ++row) {
            long long i = row * width + j;
            double d = (double)dy[i];
            sumDyX += d * (double)((x[i] - mean[row]) * rstd[row]);
            sumDy += d;
        }
        if (dWeight) dWeight[j] += (float)sumDyX;
        if (dBias) dBias[j] += (float)sumDy;
    }
}

// MARK: adaLN modulation and gated residual (x [B, N, D], per-sample [B, D])

extern "C" __global__ void modulate_f32(const float* x, const float* shift, const float* scale, float* y,
                                        long long tokens, int width, long long n) {
    GRID_LOOP(i, n) {
        long long row = i / width, j = i % width, p = (row / tokens) * width + j;
        y[i] = x[i] * (1.0f + scale[p]) + shift[p];
    }
}

extern "C" __global__ void modulate_backward_dx_f32(const float* dy, const float* scale, float* dx,
                                                    long long tokens, int width, long long n) {
    GRID_LOOP(i, n) {
        long long row = i / width, j = i % width, p = (row / tokens) * width + j;
        dx[i] = dy[i] * (1.0f + scale[p]);
    }
}

// For data [B, N, D]: first[b, j] = Σ_n a, second[b, j] = Σ_n a · c (c may be null → second unused).
// One thread per (b, j), tokens in order, f64 sums.
extern "C" __global__ void token_sums_f32(const float* a, const float* c, float* first, float* second,
                                          int batch, long long tokens, int width) {
    GRID_LOOP(column, (long long)batch * width) {
        long long b = column / width, j = column % width;
        double s1 = 0, s2 = 0;
        for (long long t = 0; t < tokens; ++t) {
            long long i = (b * tokens + t) * width + j;
            double v = (double)a[i];
            s1 += v;
            if (c) s2 += v * (double)c[i];
        }
        if (first) first[column] = (float)s1;
        if (second) second[column] = (float)s2;
    }
}

extern "C" __global__ void gated_residual_f32(const float* x, const float* gate, const float* y, float* out,
                                              long long tokens, int width, long long n) {
    GRID_LOOP(i, n) {
        long long row = i / width, j = i % width, p = (row / tokens) * width + j;
        out[i] = x[i] + gate[p] * y[i];
    }
}

extern "C" __global__ void gated_residual_backward_dy_f32(const float* dOut, const float* gate, float* dY,
                                                          long long tokens, int width, long long n) {
    GRID_LOOP(i, n) {
        long long row = i / width, j = i % width, p = (row / tokens) * width + j;
        dY[i] = dOut[i] * gate[p];
    }
}

// MARK: Activations

__device__ inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// GELU (tanh approximation) as x σ(2u), u = √(2/π)(x + 0.044715 x³), exactly as the CPU backend writes it.
extern "C" __global__ void gelu_f32(const float* x, float* out, long long n) {
    const float c = 0.7978845608f, a = 0.044715f;
    GRID_LOOP(i, n) {
        float v = x[i];
        out[i] = v * sigmoidf(2.0f * c * (v + a * v * v * v));
    }
}

extern "C" __global__ void gelu_backward_f32(const float* dy, const float* x, float* dx, long long n) {
    const float c = 0.7978845608f, a = 0.044715f;
    GRID_LOOP(i, n) {
        float v = x[i];
        float s = sigmoidf(2.0f * c * (v + a * v * v * v));
        float slope = 2.0f * c * (1.0f + 3.0f * a * v * v);
        dx[i] = dy[i] * (s + v * s * (1.0f - s) * slope);
    }
}

extern "C" __global__ void silu_f32(const float* x, float* out, long long n) {
    GRID_LOOP(i, n) { float v = x[i]; out[i] = v * sigmoidf(v); }
}

extern "C" __global__ void silu_backward_f32(const float* dy, const float* x, float* dx, long long n) {
    GRID_LOOP(i, n) {
        float v = x[i], s = sigmoidf(v);
        dx[i] = dy[i] * s * (1.0f + v * (1.0f - s));
    }
}

// MARK: Embeddings

extern "C" __global__ void embedding_f32(const float* table, const int* indices, float* out, int width, long long n) {
    GRID_LOOP(i, n) {
        long long row = i / width, j = i % width;
        out[i] = table[(long long)indices[row] * width + j];
    }
}

// One thread per column; each takes the indices in order, so repeated indices add up in a fixed order.
extern "C" __global__ void embedding_backward_f32(const float* dOut, const int* indices, float* dTable, int width,
                                                  long long count) {
    GRID_LOOP(j, (long long)width) {
        for (long long i = 0; i < count; ++i) {
            dTable[(long long)indices[i] * width + j] += dOut[i * width + j];
        }
    }
}

// out[b, i] = cos(t_b f_i), out[b, half + i] = sin(t_b f_i), zero last column for odd dims.
extern "C" __global__ void timestep_embedding_f32(const float* t, const float* frequencies, float* out, int dim,
                                                  int half, long long n) {
    GRID_LOOP(i, n) {
        long long b = i / dim;
        int c = (int)(i % dim);
        float v;
        if (c < half) v = cosf(t[b] * frequencies[c]);
        else if (c < 2 * half) v = sinf(t[b] * frequencies[c - half]);
        else v = 0.0f;
        out[i] = v;
    }
}
