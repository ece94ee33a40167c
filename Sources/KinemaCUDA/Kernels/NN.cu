// Kinema's NN kernels (f32): LayerNorm, adaLN modulation, gated residual, activations, embeddings, timestep
// features and a simple (non-flash) attention. Compiled at run time by NVRTC.
//
// Determinism: every reduction runs in a fixed order (fixed-tree block reductions, or one thread walking its rows
// in order); no atomics, so results are bit-identical from run to run.

// One block per row: rows walked with a block-stride loop.
#define BLOCK_LOOP(row, rows) for (long long row = blockIdx.x; row < (rows); row += gridDim.x)

#define MAX_THREADS 256
#define MAX_HEAD_DIM 256
#define KEY_CHUNK 128

// Sum of `value` over the block (blockDim.x a power of two ≤ MAX_THREADS) by a fixed tree; every thread gets it.
__device__ double block_sum(double value, double* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
        __syncthreads();
    }
    double total = shared[0];
    __syncthreads();
    return total;
}

__device__ float block_max(float value, float* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + stride]);
        __syncthreads();
    }
    float result = shared[0];
    __syncthreads();
    return result;
}

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

// MARK: Attention (simple, not flash): q [P, Nq, Dh], k/v [P, Nk, Dh] with P = B·H.

__device__ inline float dot_row(const float* a, const float* b, int n) {
    float total = 0;
    for (int d = 0; d < n; ++d) total += a[d] * b[d];
    return total;
}

// One block per (pair, query row): the row max and log-sum-exp of the scaled scores, then the output in chunks of
// keys, each thread owning output dimensions d ≡ tid (mod blockDim).
extern "C" __global__ void attention_forward_f32(const float* q, const float* k, const float* v, float* out,
                                                 float* lse, int nq, int nk, int dh, float scale, long long rows) {
    __shared__ float qRow[MAX_HEAD_DIM];
    __shared__ float probabilities[KEY_CHUNK];
    __shared__ float maxShared[MAX_THREADS];
    __shared__ double sumShared[MAX_THREADS];
    BLOCK_LOOP(row, rows) {
        long long pair = row / nq;
        const float* keys = k + pair * (long long)nk * dh;
        const float* values = v + pair * (long long)nk * dh;
        for (int d = threadIdx.x; d < dh; d += blockDim.x) qRow[d] = q[row * dh + d];
        __syncthreads();
        float localMax = -__int_as_float(0x7f800000);
        for (int j = threadIdx.x; j < nk; j += blockDim.x)
            localMax = fmaxf(localMax, scale * dot_row(qRow, keys + (long long)j * dh, dh));
        float maximum = block_max(localMax, maxShared);
        double localSum = 0;
        for (int j = threadIdx.x; j < nk; j += blockDim.x)
            localSum += (double)expf(scale * dot_row(qRow, keys + (long long)j * dh, dh) - maximum);
        float l = maximum + logf((float)block_sum(localSum, sumShared));
        if (threadIdx.x == 0) lse[row] = l;
        float accumulator0 = 0, accumulator1 = 0;  // dims tid and tid + blockDim (dh ≤ 2 · blockDim)
        for (int chunk = 0; chunk < nk; chunk += KEY_CHUNK) {
            int j = chunk + threadIdx.x;
            if (threadIdx.x < KEY_CHUNK && j < nk)
                probabilities[threadIdx.x] = expf(scale * dot_row(qRow, keys + (long long)j * dh, dh) - l);
            __syncthreads();
            int count = min(KEY_CHUNK, nk - chunk);
            for (int jj = 0; jj < count; ++jj) {
                const float* vRow = values + (long long)(chunk + jj) * dh;
                float p = probabilities[jj];
                if (threadIdx.x < dh) accumulator0 += p * vRow[threadIdx.x];
                if (threadIdx.x + blockDim.x < dh) accumulator1 += p * vRow[threadIdx.x + blockDim.x];
            }
            __syncthreads();
        }
        if (threadIdx.x < dh) out[row * dh + threadIdx.x] = accumulator0;
        if (threadIdx.x + blockDim.x < dh) out[row * dh + threadIdx.x + blockDim.x] = accumulator1;
        __syncthreads();
    }
}

// δ_i = Σ_d dO_id O_id, one block per query row.
extern "C" __global__ void attention_delta_f32(const float* dOut, const float* out, float* delta, int dh,
                                               long long rows) {
    __shared__ double shared[MAX_THREADS];
    BLOCK_LOOP(row, rows) {
        double total = 0;
        for (int d = threadIdx.x; d < dh; d += blockDim.x) total += (double)dOut[row * dh + d] * (double)out[row * dh + d];
        total = block_sum(total, shared);
        if (threadIdx.x == 0) delta[row] = (float)total;
    }
}

// dQ_i = scale · Σ_j P_ij (dP_ij − δ_i) k_j, P_ij = exp(scale q_i·k_j − lse_i), dP_ij = dO_i·v_j.
// One block per (pair, query row).
extern "C" __global__ void attention_backward_dq_f32(const float* q, const float* k, const float* v, const float* dOut,
                                                     const float* lse, const float* delta, float* dq, int nq, int nk,
                                                     int dh, float scale, long long rows) {
    __shared__ float qRow[MAX_HEAD_DIM];
    __shared__ float gRow[MAX_HEAD_DIM];
    __shared__ float dScores[KEY_CHUNK];
    BLOCK_LOOP(row, rows) {
        long long pair = row / nq;
        const float* keys = k + pair * (long long)nk * dh;
        const float* values = v + pair * (long long)nk * dh;
        for (int d = threadIdx.x; d < dh; d += blockDim.x) { qRow[d] = q[row * dh + d]; gRow[d] = dOut[row * dh + d]; }
        __syncthreads();
        float l = lse[row], di = delta[row];
        float accumulator0 = 0, accumulator1 = 0;
        for (int chunk = 0; chunk < nk; chunk += KEY_CHUNK) {
            int j = chunk + threadIdx.x;
            if (threadIdx.x < KEY_CHUNK && j < nk) {
                float p = expf(scale * dot_row(qRow, keys + (long long)j * dh, dh) - l);
                float dp = dot_row(gRow, values + (long long)j * dh, dh);
                dScores[threadIdx.x] = p * (dp - di);
            }
            __syncthreads();
            int count = min(KEY_CHUNK, nk - chunk);
            for (int jj = 0; jj < count; ++jj) {
                const float* kRow = keys + (long long)(chunk + jj) * dh;
                float ds = dScores[jj];
                if (threadIdx.x < dh) accumulator0 += ds * kRow[threadIdx.x];
                if (threadIdx.x + blockDim.x < dh) accumulator1 += ds * kRow[threadIdx.x + blockDim.x];
            }
            __syncthreads();
        }
        if (threadIdx.x < dh) dq[row * dh + threadIdx.x] = scale * accumulator0;
        if (threadIdx.x + blockDim.x < dh) dq[row * dh + threadIdx.x + blockDim.x] = scale * accumulator1;
        __syncthreads();
    }
}

// dV_j = Σ_i P_ij dO_i, dK_j = scale · Σ_i dS_ij q_i. One block per (pair, key row), queries in chunks.
extern "C" __global__ void attention_backward_dkv_f32(const float* q, const float* k, const float* v,
                                                      const float* dOut, const float* lse, const float* delta,
                                                      float* dk, float* dv, int nq, int nk, int dh, float scale,
                                                      long long rows) {
    __shared__ float kRow[MAX_HEAD_DIM];
    __shared__ float vRow[MAX_HEAD_DIM];
    __shared__ float probabilities[KEY_CHUNK];
    __shared__ float dScores[KEY_CHUNK];
    BLOCK_LOOP(row, rows) {
        long long pair = row / nk;
        const float* queries = q + pair * (long long)nq * dh;
        const float* gradients = dOut + pair * (long long)nq * dh;
        for (int d = threadIdx.x; d < dh; d += blockDim.x) { kRow[d] = k[row * dh + d]; vRow[d] = v[row * dh + d]; }
        __syncthreads();
        float dk0 = 0, dk1 = 0, dv0 = 0, dv1 = 0;
        for (int chunk = 0; chunk < nq; chunk += KEY_CHUNK) {
            int i = chunk + threadIdx.x;
            if (threadIdx.x < KEY_CHUNK && i < nq) {
                long long qi = pair * nq + i;
                float p = expf(scale * dot_row(queries + (long long)i * dh, kRow, dh) - lse[qi]);
                float dp = dot_row(gradients + (long long)i * dh, vRow, dh);
                probabilities[threadIdx.x] = p;
                dScores[threadIdx.x] = p * (dp - delta[qi]);
            }
            __syncthreads();
            int count = min(KEY_CHUNK, nq - chunk);
            for (int ii = 0; ii < count; ++ii) {
                const float* qRow = queries + (long long)(chunk + ii) * dh;
                const float* gRow = gradients + (long long)(chunk + ii) * dh;
                float p = probabilities[ii], ds = dScores[ii];
                if (threadIdx.x < dh) { dv0 += p * gRow[threadIdx.x]; dk0 += ds * qRow[threadIdx.x]; }
                int d1 = threadIdx.x + blockDim.x;
                if (d1 < dh) { dv1 += p * gRow[d1]; dk1 += ds * qRow[d1]; }
            }
            __syncthreads();
        }
        if (threadIdx.x < dh) { dv[row * dh + threadIdx.x] = dv0; dk[row * dh + threadIdx.x] = scale * dk0; }
        int d1 = threadIdx.x + blockDim.x;
        if (d1 < dh) { dv[row * dh + d1] = dv1; dk[row * dh + d1] = scale * dk1; }
        __syncthreads();
    }
}
