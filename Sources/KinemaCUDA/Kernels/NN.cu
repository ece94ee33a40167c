// Kinema's NN kernels: LayerNorm (alone and fused with adaLN modulation), modulation, gated residual, column sums
// for the gradients of per-sample and per-column parameters, activations, embeddings, timestep features, and a
// simple (non-flash) f32 attention. Compiled at run time by NVRTC, once per activation element type T (Common.cuh).
//
// Determinism: every reduction runs in a fixed order (warp shuffles in a fixed pattern, fixed-tree block
// reductions, or one thread walking its rows in order); no atomics, so results are bit-identical from run to run.

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

// Sum over the 32 lanes of a warp (butterfly: every lane gets the same, bit-identical total).
__device__ inline float warp_sum(float v) {
    #pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
    return v;
}

// MARK: Row kernels (one warp per row of `width` elements)
//
// A row is read in packs of 8 elements (one or two 16-byte accesses) when the width allows it, element by element
// otherwise. The row stays in L1 between the passes, so only the first pass reads device memory.

#define WARP_ROW_LOOP(row, rows) \
    for (long long row = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32; row < (rows); \
         row += (long long)gridDim.x * blockDim.x / 32)
#define PACK_LOOP(j, width) for (int j = (threadIdx.x & 31) * 8; j < (width); j += 256)
#define LANE_LOOP(j, width) for (int j = threadIdx.x & 31; j < (width); j += 32)

// Mean and 1/σ (biased variance, two passes in f32) of row `r` of x.
__device__ inline void row_statistics(const T* r, int width, bool packed, double eps, float* mean, float* rstd) {
    float total = 0, v[8];
    if (packed) { PACK_LOOP(j, width) { ld8(r, j, v); for (int k = 0; k < 8; ++k) total += v[k]; } }
    else { LANE_LOOP(j, width) total += ld(r, j); }
    float mu = warp_sum(total) / (float)width;
    float squares = 0;
    if (packed) { PACK_LOOP(j, width) { ld8(r, j, v); for (int k = 0; k < 8; ++k) { float d = v[k] - mu; squares += d * d; } } }
    else { LANE_LOOP(j, width) { float d = ld(r, j) - mu; squares += d * d; } }
    *mean = mu;
    *rstd = (float)(1.0 / sqrt((double)(warp_sum(squares) / (float)width) + eps));
}

// LayerNorm over rows, then y = x̂ · a + b with a, b chosen per row: (weight, bias) for a plain LayerNorm
// (either may be null), or (1 + scale[sample], shift[sample]) for the adaLN-fused form (modulation != 0,
// `tokens` rows per sample). Writes the per-row mean and 1/σ for the backward.
extern "C" __global__ void layernorm_forward(const T* x, const T* weight, const T* bias, T* y, float* mean,
                                             float* rstd, long long rows, int width, double eps, long long tokens,
                                             int modulation) {
    bool packed = (width & 7) == 0;
    WARP_ROW_LOOP(row, rows) {
        const T* r = x + row * width;
        T* out = y + row * width;
        float m, s;
        row_statistics(r, width, packed, eps, &m, &s);
        if ((threadIdx.x & 31) == 0) { mean[row] = m; rstd[row] = s; }
        const T* a = modulation ? weight + (row / tokens) * width : weight;  // scale (1 + a) or weight a
        const T* b = modulation ? bias + (row / tokens) * width : bias;
        float add = modulation ? 1.0f : 0.0f;
        if (packed) {
            PACK_LOOP(j, width) {
                float v[8], av[8], bv[8];
                ld8(r, j, v);
                if (a) ld8(a, j, av); else for (int k = 0; k < 8; ++k) av[k] = 1.0f - add;
                if (b) ld8(b, j, bv); else for (int k = 0; k < 8; ++k) bv[k] = 0.0f;
                for (int k = 0; k < 8; ++k) v[k] = (v[k] - m) * s * (av[k] + add) + bv[k];
                st8(out, j, v);
            }
        } else {
            LANE_LOOP(j, width) {
                float v = (ld(r, j) - m) * s * ((a ? ld(a, j) : 1.0f - add) + add) + (b ? ld(b, j) : 0.0f);
                st(out, j, v);
            }
        }
    }
}

// dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)) (+ residual), ĝ = dy ⊙ a with a = weight (null: 1) or, in the
// adaLN-fused form, 1 + scale[sample]. `residual` (may be null) is added to dx: the skip connection's gradient,
// fused so the block's backward needs no separate add.
extern "C" __global__ void layernorm_backward_dx(const T* dy, const T* x, const T* weight, const float* mean,
                                                 const float* rstd, const T* residual, T* dx, long long rows,
                                                 int width, long long tokens, int modulation) {
    bool packed = (width & 7) == 0;
    float add = modulation ? 1.0f : 0.0f;
    WARP_ROW_LOOP(row, rows) {
        const T* g = dy + row * width;
        const T* r = x + row * width;
        const T* a = modulation ? weight + (row / tokens) * width : weight;
        float m = mean[row], s = rstd[row];
        float sumG = 0, sumGX = 0;
        if (packed) {
            PACK_LOOP(j, width) {
                float gv[8], xv[8], av[8];
                ld8(g, j, gv); ld8(r, j, xv);
                if (a) ld8(a, j, av); else for (int k = 0; k < 8; ++k) av[k] = 1.0f - add;
                for (int k = 0; k < 8; ++k) { float gj = gv[k] * (av[k] + add); sumG += gj; sumGX += gj * (xv[k] - m) * s; }
            }
        } else {
            LANE_LOOP(j, width) {
                float gj = ld(g, j) * ((a ? ld(a, j) : 1.0f - add) + add);
                sumG += gj;
                sumGX += gj * (ld(r, j) - m) * s;
            }
        }
        float meanG = warp_sum(sumG) / (float)width, meanGX = warp_sum(sumGX) / (float)width;
        if (packed) {
            PACK_LOOP(j, width) {
                float gv[8], xv[8], av[8], out[8];
                ld8(g, j, gv); ld8(r, j, xv);
                if (a) ld8(a, j, av); else for (int k = 0; k < 8; ++k) av[k] = 1.0f - add;
                if (residual) ld8(residual + row * width, j, out); else for (int k = 0; k < 8; ++k) out[k] = 0.0f;
                for (int k = 0; k < 8; ++k) out[k] += s * (gv[k] * (av[k] + add) - meanG - (xv[k] - m) * s * meanGX);
                st8(dx + row * width, j, out);
            }
        } else {
            LANE_LOOP(j, width) {
                float gj = ld(g, j) * ((a ? ld(a, j) : 1.0f - add) + add);
                float v = s * (gj - meanG - (ld(r, j) - m) * s * meanGX);
                if (residual) v += ld(residual + row * width, j);
                st(dx + row * width, j, v);
            }
        }
    }
}

// MARK: Column sums: the gradients of per-column and per-sample parameters
//
// Data [S, R, W] (S segments of R rows): for segment s and column j, first = Σ_r a and second = Σ_r a · c, where
// c is x̂ = (x − mean[row]) · rstd[row] when `mean` is given (the LayerNorm output, recomputed) and c itself
// otherwise; either output may be null. Rows are split into chunks of `chunkRows`; each thread sums one column of
// one chunk in order into partial[(s · chunks + chunk), j], and column_chunk_sums adds the chunks in order: a fixed
// summation order, and enough threads for both [64, 256, 1152] per-sample sums and [1, 16384, 3456] bias sums.
extern "C" __global__ void column_partial_sums(const T* a, const T* c, const float* mean, const float* rstd,
                                               float* first, float* second, long long rows, int width,
                                               int chunkRows, int chunks) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= width) return;
    long long segmentChunk = blockIdx.y, segment = segmentChunk / chunks, chunk = segmentChunk % chunks;
    long long begin = segment * rows + chunk * (long long)chunkRows;
    long long end = segment * rows + min(rows, (chunk + 1) * (long long)chunkRows);
    float s1 = 0, s2 = 0;
    for (long long row = begin; row < end; ++row) {
        float v = ld(a, row * width + j);
        s1 += v;
        if (c) {
            float w = ld(c, row * width + j);
            if (mean) w = (w - mean[row]) * rstd[row];
            s2 += v * w;
        }
    }
    if (first) first[segmentChunk * width + j] = s1;
    if (second) second[segmentChunk * width + j] = s2;
}

// out[s, j] (+)= Σ_chunk partial[s · chunks + chunk, j], chunks in order; out is of the launch's element type (an
// f32 parameter gradient, or a bf16 modulation gradient).
extern "C" __global__ void column_chunk_sums(const float* partial, T* out, int chunks, long long segmentsWidth,
                                             int width, int accumulate) {
    GRID_LOOP(i, segmentsWidth) {
        long long segment = i / width, j = i % width;
        float total = 0;
        for (int chunk = 0; chunk < chunks; ++chunk) total += partial[(segment * chunks + chunk) * width + j];
        st(out, i, accumulate ? ld(out, i) + total : total);
    }
}

// MARK: adaLN modulation and gated residual (x [B, N, D], per-sample [B, D])

extern "C" __global__ void modulate(const T* x, const T* shift, const T* scale, T* y, long long tokens, int width,
                                    long long n) {
    GRID_LOOP(i, n) {
        long long row = i / width, j = i % width, p = (row / tokens) * width + j;
        st(y, i, ld(x, i) * (1.0f + ld(scale, p)) + ld(shift, p));
    }
}

// out = x ⊙ (add + g[sample]) (+ y): modulate's dx (add 1, no y), the gated residual (add 0, y) and its dY (add 0).
extern "C" __global__ void per_sample_scale(const T* x, const T* g, const T* y, T* out, float add, long long tokens,
                                            int width, long long n) {
    if ((width & 7) == 0) {
        for (long long i = (blockIdx.x * (long long)blockDim.x + threadIdx.x) * 8; i < n;
             i += (long long)blockDim.x * gridDim.x * 8) {
            long long p = (i / width / tokens) * width + i % width;
            float xv[8], gv[8], yv[8];
            ld8(x, i, xv); ld8(g, p, gv);
            if (y) ld8(y, i, yv); else for (int k = 0; k < 8; ++k) yv[k] = 0.0f;
            for (int k = 0; k < 8; ++k) xv[k] = xv[k] * (add + gv[k]) + yv[k];
            st8(out, i, xv);
        }
        return;
    }
    GRID_LOOP(i, n) {
        long long p = (i / width / tokens) * width + i % width;
        st(out, i, ld(x, i) * (add + ld(g, p)) + (y ? ld(y, i) : 0.0f));
    }
}

// MARK: Activations

__device__ inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// GELU (tanh approximation) as x σ(2u), u = √(2/π)(x + 0.044715 x³), exactly as the CPU backend writes it.
extern "C" __global__ void gelu(const T* x, T* out, long long n) {
    const float c = 0.7978845608f, a = 0.044715f;
    GRID_LOOP(i, n) {
        float v = ld(x, i);
        st(out, i, v * sigmoidf(2.0f * c * (v + a * v * v * v)));
    }
}

extern "C" __global__ void gelu_backward(const T* dy, const T* x, T* dx, long long n) {
    const float c = 0.7978845608f, a = 0.044715f;
    GRID_LOOP(i, n) {
        float v = ld(x, i);
        float s = sigmoidf(2.0f * c * (v + a * v * v * v));
        float slope = 2.0f * c * (1.0f + 3.0f * a * v * v);
        st(dx, i, ld(dy, i) * (s + v * s * (1.0f - s) * slope));
    }
}

extern "C" __global__ void silu(const T* x, T* out, long long n) {
    GRID_LOOP(i, n) { float v = ld(x, i); st(out, i, v * sigmoidf(v)); }
}

extern "C" __global__ void silu_backward(const T* dy, const T* x, T* dx, long long n) {
    GRID_LOOP(i, n) {
        float v = ld(x, i), s = sigmoidf(v);
        st(dx, i, ld(dy, i) * s * (1.0f + v * (1.0f - s)));
    }
}

// MARK: Embeddings

extern "C" __global__ void embedding(const T* table, const int* indices, T* out, int width, long long n) {
    GRID_LOOP(i, n) {
        long long row = i / width, j = i % width;
        out[i] = table[(long long)indices[row] * width + j];
    }
}

// One thread per column; each takes the indices in order, so repeated indices add up in a fixed order. The table's
// gradient is f32 whatever T is.
extern "C" __global__ void embedding_backward(const T* dOut, const int* indices, float* dTable, int width,
                                              long long count) {
    GRID_LOOP(j, (long long)width) {
        for (long long i = 0; i < count; ++i) {
            dTable[(long long)indices[i] * width + j] += ld(dOut, i * width + j);
        }
    }
}

// out[b, i] = cos(t_b f_i), out[b, half + i] = sin(t_b f_i), zero last column for odd dims. t stays f32 (a bf16 t
// could not even tell 999 from 1000).
extern "C" __global__ void timestep_embedding(const float* t, const float* frequencies, T* out, int dim, int half,
                                              long long n) {
    GRID_LOOP(i, n) {
        long long b = i / dim;
        int c = (int)(i % dim);
        float v;
        if (c < half) v = cosf(t[b] * frequencies[c]);
        else if (c < 2 * half) v = sinf(t[b] * frequencies[c - half]);
        else v = 0.0f;
        st(out, i, v);
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
