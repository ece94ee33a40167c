// Kinema's NN kernels: LayerNorm (alone, fused with adaLN modulation and with the gated residual before it),
// modulation, gated residual, the per-sample and per-column parameter gradients summed in the same pass as the
// input gradients, bias-gradient column sums, activations, embeddings and timestep features
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

// MARK: Token runs: row passes that also sum columns per sample
//
// For data [S, R, W] (S samples of R rows), the gradients of per-sample and per-column parameters (modulation
// shift and scale, gates, LayerNorm weight and bias) are column sums over each sample's rows; a kernel that walks
// those rows anyway adds them up on the way, instead of a second pass over the data. A block takes a run of at
// most `chunkRows` consecutive rows of one sample (blockIdx.x = sample · chunks + chunk); warp w walks rows
// w, w + warps, … of the run, one warp per row as above, so each lane sees the same columns in every row and adds
// them into its warp's slice of shared memory, which no other warp touches: no synchronisation during the walk.
// At the end the warps' slices add up in warp order into one partial row per block, first/second[blockIdx.x, j],
// and column_chunk_sums adds a sample's chunks in order: a fixed order throughout, so the sums repeat bit for bit.
// Shared memory: the slices of the first sum, [warps][width] f32, then those of the second (the host sizes it).

struct TokenRun {
    long long sample, begin, end;  // the run's sample and its rows
    int warp, warps;
    float* first;  // the warp's slices of the two sums (null for a sum not taken)
    float* second;
};

// The block's run, with its slices in `sums` zeroed.
__device__ inline TokenRun token_run(float* sums, long long tokens, int width, int chunkRows, int chunks,
                                     bool first, bool second) {
    TokenRun run;
    long long block = blockIdx.x, chunk = block % chunks;
    run.sample = block / chunks;
    run.begin = run.sample * tokens + chunk * chunkRows;
    run.end = run.sample * tokens + min(tokens, (chunk + 1) * chunkRows);
    run.warp = threadIdx.x / 32;
    run.warps = blockDim.x / 32;
    int count = ((first ? 1 : 0) + (second ? 1 : 0)) * run.warps * width;
    for (int i = threadIdx.x; i < count; i += blockDim.x) sums[i] = 0.0f;
    __syncthreads();
    run.first = first ? sums + run.warp * width : 0;
    run.second = second ? sums + ((first ? run.warps : 0) + run.warp) * width : 0;
    return run;
}

#define RUN_ROW_LOOP(row, run) for (long long row = (run).begin + (run).warp; row < (run).end; row += (run).warps)

// Where column j sits in a warp's slice. Packed, the first and the second halves of the packs are stored apart,
// so the lanes' 16-byte accesses to their packs are consecutive and hit every bank once.
__device__ inline int run_slot(int j, int width, bool packed) {
    return packed ? (j & 4) * (width / 8) + (j >> 3) * 4 + (j & 3) : j;
}

// slice[columns j … j + 7] += v, for a lane's pack at column j.
__device__ inline void run_add8(float* slice, int j, int width, const float* v) {
    float4* low = (float4*)(slice + run_slot(j, width, true));
    float4* high = (float4*)(slice + run_slot(j + 4, width, true));
    float4 a = *low, b = *high;
    a.x += v[0]; a.y += v[1]; a.z += v[2]; a.w += v[3];
    b.x += v[4]; b.y += v[5]; b.z += v[6]; b.w += v[7];
    *low = a;
    *high = b;
}

// Adds the warps' slices in warp order and writes the block's partial rows (first and second: either may be null).
__device__ inline void run_finish(TokenRun run, const float* sums, int width, bool packed, float* first,
                                  float* second) {
    __syncthreads();
    const float* secondSlices = sums + (first ? run.warps * width : 0);
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        int slot = run_slot(j, width, packed);
        float t1 = 0, t2 = 0;
        for (int w = 0; w < run.warps; ++w) {
            if (first) t1 += sums[w * width + slot];
            if (second) t2 += secondSlices[w * width + slot];
        }
        if (first) first[blockIdx.x * (long long)width + j] = t1;
        if (second) second[blockIdx.x * (long long)width + j] = t2;
    }
}

// MARK: LayerNorm, alone, fused with adaLN modulation, and fused with the gated residual before it

// The row a LayerNorm normalises: x itself or, fused with the gated residual before it, x + gate ⊙ branch (the
// sample's gate) rounded to T as it is stored, so the statistics and the output are those of the stored sum (what
// the backward recomputes x̂ from). Each pass recomputes it from x and branch, which stay in L1 after the first.
struct RowInput { const T* x; const T* branch; const T* gate; };

__device__ inline void row_input8(RowInput in, int j, float* v) {
    ld8(in.x, j, v);
    if (in.branch) {
        float b[8], g[8];
        ld8(in.branch, j, b); ld8(in.gate, j, g);
        for (int k = 0; k < 8; ++k) v[k] = rounded(v[k] + g[k] * b[k]);
    }
}

__device__ inline float row_input(RowInput in, int j) {
    float v = ld(in.x, j);
    return in.branch ? rounded(v + ld(in.gate, j) * ld(in.branch, j)) : v;
}

// Mean and 1/σ (biased variance, two passes in f32) of a row; the first pass also stores the row to `sum` when
// given (the fused gated residual's output).
__device__ inline void row_statistics(RowInput in, T* sum, int width, bool packed, double eps, float* mean,
                                      float* rstd) {
    float total = 0, v[8];
    if (packed) {
        PACK_LOOP(j, width) {
            row_input8(in, j, v);
            if (sum) st8(sum, j, v);
            for (int k = 0; k < 8; ++k) total += v[k];
        }
    } else {
        LANE_LOOP(j, width) {
            float u = row_input(in, j);
            if (sum) st(sum, j, u);
            total += u;
        }
    }
    float mu = warp_sum(total) / (float)width;
    float squares = 0;
    if (packed) { PACK_LOOP(j, width) { row_input8(in, j, v); for (int k = 0; k < 8; ++k) { float d = v[k] - mu; squares += d * d; } } }
    else { LANE_LOOP(j, width) { float d = row_input(in, j) - mu; squares += d * d; } }
    *mean = mu;
    *rstd = (float)(1.0 / sqrt((double)(warp_sum(squares) / (float)width) + eps));
}

// LayerNorm over rows, then y = x̂ · a + b with a, b chosen per row: (weight, bias) for a plain LayerNorm
// (either may be null), or (1 + scale[sample], shift[sample]) for the adaLN-fused form (modulation != 0,
// `tokens` rows per sample). With `branch` (else null, as gate and sum), the row is the gated residual
// x + gate[sample] ⊙ branch, written to `sum`: the residual add and the LayerNorm after it in one pass. Writes the
// per-row mean and 1/σ for the backward.
extern "C" __global__ void layernorm_forward(const T* x, const T* branch, const T* gate, T* sum, const T* weight,
                                             const T* bias, T* y, float* mean, float* rstd, long long rows,
                                             int width, double eps, long long tokens, int modulation, int vectors) {
    bool packed = vectors != 0;
    WARP_ROW_LOOP(row, rows) {
        long long sample = row / tokens;
        RowInput in = {x + row * width, branch ? branch + row * width : 0, gate ? gate + sample * width : 0};
        T* out = y + row * width;
        float m, s;
        row_statistics(in, sum ? sum + row * width : 0, width, packed, eps, &m, &s);
        if ((threadIdx.x & 31) == 0) { mean[row] = m; rstd[row] = s; }
        const T* a = modulation ? weight + sample * width : weight;  // scale (1 + a) or weight a
        const T* b = modulation ? bias + sample * width : bias;
        float add = modulation ? 1.0f : 0.0f;
        if (packed) {
            PACK_LOOP(j, width) {
                float v[8], av[8], bv[8];
                row_input8(in, j, v);
                if (a) ld8(a, j, av); else for (int k = 0; k < 8; ++k) av[k] = 1.0f - add;
                if (b) ld8(b, j, bv); else for (int k = 0; k < 8; ++k) bv[k] = 0.0f;
                for (int k = 0; k < 8; ++k) v[k] = (v[k] - m) * s * (av[k] + add) + bv[k];
                st8(out, j, v);
            }
        } else {
            LANE_LOOP(j, width) {
                float v = (row_input(in, j) - m) * s * ((a ? ld(a, j) : 1.0f - add) + add) + (b ? ld(b, j) : 0.0f);
                st(out, j, v);
            }
        }
    }
}

// LayerNorm's backward by token runs: dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)) (+ residual), ĝ = dy ⊙ a with
// a = weight (null: 1) or, in the adaLN-fused form, 1 + scale[sample]; `residual` (may be null) is the skip
// connection's gradient, added in the same pass so the block's backward needs no separate add. From the same read
// of dy and x, the partial column sums of the parameters' gradients: Σ dy (first: dShift or dBias) and Σ dy ⊙ x̂
// (second: dScale or dWeight); either may be null. A plain LayerNorm's parameters take one "sample" of every row.
extern "C" __global__ void layernorm_backward(const T* dy, const T* x, const T* weight, const float* mean,
                                              const float* rstd, const T* residual, T* dx, float* first,
                                              float* second, long long tokens, int width, int chunkRows, int chunks,
                                              int modulation, int vectors) {
    extern __shared__ float sums[];
    bool packed = vectors != 0;
    float add = modulation ? 1.0f : 0.0f;
    TokenRun run = token_run(sums, tokens, width, chunkRows, chunks, first, second);
    const T* a = modulation ? weight + run.sample * width : weight;
    RUN_ROW_LOOP(row, run) {
        const T* g = dy + row * width;
        const T* r = x + row * width;
        float m = mean[row], s = rstd[row];
        float sumG = 0, sumGX = 0;
        if (packed) {
            PACK_LOOP(j, width) {
                float gv[8], xv[8], av[8];
                ld8(g, j, gv); ld8(r, j, xv);
                if (a) ld8(a, j, av); else for (int k = 0; k < 8; ++k) av[k] = 1.0f - add;
                for (int k = 0; k < 8; ++k) {
                    xv[k] = (xv[k] - m) * s;  // x̂
                    float gj = gv[k] * (av[k] + add);
                    sumG += gj;
                    sumGX += gj * xv[k];
                }
                if (first) run_add8(run.first, j, width, gv);
                if (second) { for (int k = 0; k < 8; ++k) gv[k] *= xv[k]; run_add8(run.second, j, width, gv); }
            }
        } else {
            LANE_LOOP(j, width) {
                float d = ld(g, j), xhat = (ld(r, j) - m) * s;
                float gj = d * ((a ? ld(a, j) : 1.0f - add) + add);
                sumG += gj;
                sumGX += gj * xhat;
                if (first) run.first[j] += d;
                if (second) run.second[j] += d * xhat;
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
    run_finish(run, sums, width, packed, first, second);
}

// MARK: adaLN modulation and gated residual (x [B, N, D], per-sample [B, D])

extern "C" __global__ void modulate(const T* x, const T* shift, const T* scale, T* y, long long tokens, int width,
                                    long long n) {
    GRID_LOOP(i, n) {
        long long row = i / width, j = i % width, p = (row / tokens) * width + j;
        st(y, i, ld(x, i) * (1.0f + ld(scale, p)) + ld(shift, p));
    }
}

// out = x + gate[sample] ⊙ branch.
extern "C" __global__ void gated_residual(const T* x, const T* gate, const T* branch, T* out, long long tokens,
                                          int width, long long n, int vectors) {
    if (vectors) {
        for (long long i = (blockIdx.x * (long long)blockDim.x + threadIdx.x) * 8; i < n;
             i += (long long)blockDim.x * gridDim.x * 8) {
            long long p = (i / width / tokens) * width + i % width;
            float xv[8], gv[8], bv[8];
            ld8(x, i, xv); ld8(gate, p, gv); ld8(branch, i, bv);
            for (int k = 0; k < 8; ++k) xv[k] += gv[k] * bv[k];
            st8(out, i, xv);
        }
        return;
    }
    GRID_LOOP(i, n) {
        long long p = (i / width / tokens) * width + i % width;
        st(out, i, ld(x, i) + ld(gate, p) * ld(branch, i));
    }
}

// The backward of a per-sample scaling by token runs: out = dy ⊙ (add + g[sample]) and, from the same read of dy
// and c, the partial column sums Σ dy (first) and Σ dy ⊙ c (second), either may be null. modulate's backward
// (add 1, g = scale, c = x: dx, dShift, dScale) and the gated residual's (add 0, g = gate, c = branch: dBranch and
// dGate, no first).
extern "C" __global__ void per_sample_scale_backward(const T* dy, const T* c, const T* g, float add, T* out,
                                                     float* first, float* second, long long tokens, int width,
                                                     int chunkRows, int chunks, int vectors) {
    extern __shared__ float sums[];
    bool packed = vectors != 0;
    TokenRun run = token_run(sums, tokens, width, chunkRows, chunks, first, second);
    const T* scale = g + run.sample * width;
    RUN_ROW_LOOP(row, run) {
        const T* d = dy + row * width;
        const T* v = c + row * width;
        T* o = out + row * width;
        if (packed) {
            PACK_LOOP(j, width) {
                float dv[8], cv[8], gv[8];
                ld8(d, j, dv); ld8(v, j, cv); ld8(scale, j, gv);
                if (first) run_add8(run.first, j, width, dv);
                for (int k = 0; k < 8; ++k) { cv[k] *= dv[k]; dv[k] *= add + gv[k]; }
                if (second) run_add8(run.second, j, width, cv);
                st8(o, j, dv);
            }
        } else {
            LANE_LOOP(j, width) {
                float u = ld(d, j);
                if (first) run.first[j] += u;
                if (second) run.second[j] += u * ld(v, j);
                st(o, j, u * (add + ld(scale, j)));
            }
        }
    }
    run_finish(run, sums, width, packed, first, second);
}

// MARK: Column sums: bias gradients
//
// Data [R, W]: first[j] = Σ_r a. Rows are split into chunks of `chunkRows`; each thread sums one column of one
// chunk in order into partial[chunk, j], and column_chunk_sums adds the chunks in order: a fixed summation order,
// and enough threads for [16384, 3456] bias sums. A 32 × 8 block: 32 adjacent columns (a warp reads 32
// consecutive elements of a row), 8 row groups taking every 8th row of the chunk, so 8 loads per column are in
// flight; the 8 partial sums then add up in shared memory in a fixed order.
extern "C" __global__ void column_partial_sums(const T* a, float* partial, long long rows, int width, int chunkRows) {
    __shared__ float sums[8][33];
    int j = blockIdx.x * 32 + threadIdx.x, group = threadIdx.y;
    long long chunk = blockIdx.y;
    long long begin = chunk * chunkRows, end = min(rows, (chunk + 1) * (long long)chunkRows);
    float total = 0;
    if (j < width) {
        #pragma unroll 4
        for (long long row = begin + group; row < end; row += 8) total += ld(a, row * width + j);
    }
    sums[group][threadIdx.x] = total;
    __syncthreads();
    if (group == 0 && j < width) {
        float t = 0;
        for (int g = 0; g < 8; ++g) t += sums[g][threadIdx.x];
        partial[chunk * width + j] = t;
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
