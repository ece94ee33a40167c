// Kinema's NN kernels: LayerNorm (alone and fused with adaLN modulation), modulation, gated residual, column sums
// for the gradients of per-sample and per-column parameters, activations, embeddings and timestep features
// (attention is in Attention.cu and FlashAttention.cu). Compiled at run time by NVRTC, once per activation
// element type T (Common.cuh).
//
// Determinism: every reduction runs in a fixed order (warp shuffles in a fixed pattern, fixed-tree block
// reductions, or one thread walking its rows in order); no atomics, so results are bit-identical from run to run.

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
                                             int modulation, int vectors) {
    bool packed = vectors != 0;
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
                                                 int width, long long tokens, int modulation, int vectors) {
    bool packed = vectors != 0;
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
// A 32 × 8 block: 32 adjacent columns (a warp reads 32 consecutive elements of a row), 8 row groups taking every
// 8th row of the chunk, so 8 loads per column are in flight; the 8 partial sums then add up in shared memory in a
// fixed order.
extern "C" __global__ void column_partial_sums(const T* a, const T* c, const float* mean, const float* rstd,
                                               float* first, float* second, long long rows, int width,
                                               int chunkRows, int chunks) {
    __shared__ float sums[2][8][33];
    int j = blockIdx.x * 32 + threadIdx.x, group = threadIdx.y;
    long long segmentChunk = blockIdx.y, segment = segmentChunk / chunks, chunk = segmentChunk % chunks;
    long long begin = segment * rows + chunk * (long long)chunkRows;
    long long end = segment * rows + min(rows, (chunk + 1) * (long long)chunkRows);
    float s1 = 0, s2 = 0;
    if (j < width) {
        #pragma unroll 4
        for (long long row = begin + group; row < end; row += 8) {
            float v = ld(a, row * width + j);
            s1 += v;
            if (c) {
                float w = ld(c, row * width + j);
                if (mean) w = (w - mean[row]) * rstd[row];
                s2 += v * w;
            }
        }
    }
    sums[0][group][threadIdx.x] = s1;
    sums[1][group][threadIdx.x] = s2;
    __syncthreads();
    if (group == 0 && j < width) {
        float t1 = 0, t2 = 0;
        for (int g = 0; g < 8; ++g) { t1 += sums[0][g][threadIdx.x]; t2 += sums[1][g][threadIdx.x]; }
        if (first) first[segmentChunk * width + j] = t1;
        if (second) second[segmentChunk * width + j] = t2;
    }
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
                                            int width, long long n, int vectors) {
    if (vectors) {
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
