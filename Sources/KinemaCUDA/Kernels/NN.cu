// Kinema's NN kernels: LayerNorm (alone, fused with adaLN modulation and with the gated residual before it),
// modulation, gated residual, the per-sample and per-column parameter gradients summed in the same pass as the
// input gradients, bias-gradient column sums, activations, embeddings and timestep features
// (attention is in Attention.cu and FlashAttention.cu). Compiled at run time by NVRTC, once per activation
// element type T (Common.cuh).
//
// Determinism: every reduction runs in a fixed order (warp shuffles in a fixed pattern, warps and blocks added in
// index order, one thread walking its rows in order); the only atomic counts finished blocks (last_block), so
// results are bit-identical from run to run.

// Sum over the 32 lanes of a warp (butterfly: every lane gets the same, bit-identical total).
__device__ inline float warp_sum(float v) {
    #pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
    return v;
}

// MARK: Row kernels: one warp per row, the row in registers
//
// Lane l holds the packs of 8 columns 8l + 256p, p < P, of the row its warp works on: all of a row's loads are
// issued together, so each lane has P packs per input in flight rather than one at a time, and every pass after
// the first reads registers. P is a template parameter: the host picks the smallest instantiated count (ROW_KERNELS,
// below) that covers the width. Packs past the row's end hold zeros.

// The lane's packs p and their first columns j (the loop is unrolled, so p indexes registers).
#define ROW_LOOP(p, j) _Pragma("unroll") for (int p = 0, j = (threadIdx.x & 31) * 8; p < P; ++p, j += 256)

__device__ inline int padded_width(int width) { return (width + 7) & ~7; }

template <int P> struct Row { Pack8 p[P]; };

template <int P> __device__ inline void load_row(Row<P>& r, const T* row, int width, bool packed) {
    ROW_LOOP(p, j) {
        if (j < width) r.p[p] = load_pack(row, j, width, packed);
        else { float zero[8] = {}; r.p[p] = pack8(zero); }
    }
}

// A per-row or per-sample parameter's pack at column j, or `otherwise` everywhere for a null one.
__device__ inline void parameter8(const T* parameter, int j, int width, bool packed, float otherwise, float* v) {
    if (parameter) unpack8(load_pack(parameter, j, width, packed), v);
    else for (int k = 0; k < 8; ++k) v[k] = otherwise;
}

// MARK: Token runs: row passes that also sum columns per sample
//
// For data [S, R, W] (S samples of R rows), the gradients of per-sample and per-column parameters (modulation
// shift and scale, gates, LayerNorm weight and bias) are column sums over each sample's rows; a kernel that walks
// those rows anyway adds them up on the way, instead of a second pass over the data. In LayerNorm's backward, a
// block's run is at most `chunkRows` consecutive rows of one sample (blockIdx.x = sample · chunks + chunk); warp w
// walks rows w, w + warps, …
// of it, one row in registers at a time (row kernels, above), so each lane sees the same columns in every row and
// adds them into its warp's slice of dynamic shared memory, which no other warp touches: no synchronisation during
// the walk. At the end the warps' slices add up in warp order into one partial row per block, and the sample's last
// block to finish adds its chunks' rows in order into the outputs: a fixed order throughout, so the sums repeat bit
// for bit. The per-sample scaling's backward keeps its sums in registers instead (its own section, below).

extern __shared__ __align__(16) float runShared[];

struct TokenRun {
    long long sample, begin, end;  // the run's sample and its rows
    int warps;
    float* first;  // the warp's slices of the two sums (null for a sum not taken)
    float* second;
};

// A token-run kernel's sums: the blocks' partial rows (f32 [S · chunks, W], null for a sum not taken), the
// outputs ([S, W], f32 or T, written or added to) and a counter per sample (last_block).
struct RunSums {
    float *first, *second;
    void *firstOut, *secondOut;
    unsigned* counters;
    bool firstF32, secondF32, accumulate;  // each output f32 or T
};

// The kernels' arguments as RunSums: `outputsF32` bit 0 the first output's type, bit 1 the second's.
__device__ inline RunSums run_sums(float* first, float* second, void* firstOut, void* secondOut, unsigned* counters,
                                   int outputsF32, int accumulate) {
    return {first, second, firstOut, secondOut, counters, (outputsF32 & 1) != 0, (outputsF32 & 2) != 0, accumulate != 0};
}

// The block's run; its slices ([first: warps][slice], then [second: warps][slice] f32) start at `sums`, zeroed.
__device__ inline TokenRun token_run(float* sums, RunSums out, long long tokens, int width, int chunkRows, int chunks) {
    TokenRun run;
    long long block = blockIdx.x, chunk = block % chunks;
    run.sample = block / chunks;
    run.begin = run.sample * tokens + chunk * chunkRows;
    run.end = run.sample * tokens + min(tokens, (chunk + 1) * chunkRows);
    run.warps = blockDim.x / 32;
    int slice = padded_width(width), warp = threadIdx.x / 32;
    int count = ((out.first ? 1 : 0) + (out.second ? 1 : 0)) * run.warps * slice;
    for (int i = threadIdx.x; i < count; i += blockDim.x) sums[i] = 0.0f;
    __syncthreads();
    run.first = out.first ? sums + warp * slice : 0;
    run.second = out.second ? sums + ((out.first ? run.warps : 0) + warp) * slice : 0;
    return run;
}

// The rows of the block's run a warp walks.
#define RUN_ROW_LOOP(row, run) for (long long row = (run).begin + threadIdx.x / 32; row < (run).end; row += (run).warps)

// Where column j sits in a slice of `slice` (a multiple of 8) columns: the first and the second halves of the
// packs are stored apart, so the lanes' 16-byte accesses to their packs are consecutive and hit every bank once.
__device__ inline int run_slot(int j, int slice) { return (j & 4) * (slice / 8) + (j >> 3) * 4 + (j & 3); }

// slice[columns j … j + 7] += v, for a lane's pack at column j.
__device__ inline void run_add8(float* slice, int j, int width, const float* v) {
    float4* low = (float4*)(slice + run_slot(j, padded_width(width)));
    float4* high = (float4*)(slice + run_slot(j + 4, padded_width(width)));
    float4 a = *low, b = *high;
    a.x += v[0]; a.y += v[1]; a.z += v[2]; a.w += v[3];
    b.x += v[4]; b.y += v[5]; b.z += v[6]; b.w += v[7];
    *low = a;
    *high = b;
}

__device__ inline void store_sum(void* out, bool f32, bool accumulate, long long i, float v) {
    if (f32) ((float*)out)[i] = accumulate ? ((float*)out)[i] + v : v;
    else st((T*)out, i, accumulate ? ld((T*)out, i) + v : v);
}

// Once a block has written its partial rows: the sample's last block to finish adds the sample's partial rows in
// chunk order into the outputs.
__device__ inline void add_partial_rows(long long sample, RunSums out, int width, int chunks) {
    if (!last_block(out.counters + sample, chunks)) return;
    long long rows = sample * chunks * (long long)width;  // the sample's partial rows
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        long long i = sample * width + j;
        if (out.first) store_sum(out.firstOut, out.firstF32, out.accumulate, i, sum_partials(out.first + rows + j, chunks, width));
        if (out.second) store_sum(out.secondOut, out.secondF32, out.accumulate, i, sum_partials(out.second + rows + j, chunks, width));
    }
}

// Adds the warps' slices in warp order into the block's partial rows, then add_partial_rows.
__device__ inline void run_finish(TokenRun run, const float* sums, RunSums out, int width, int chunks) {
    __syncthreads();
    int slice = padded_width(width);
    const float* secondSlices = sums + (out.first ? run.warps * slice : 0);
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        int slot = run_slot(j, slice);
        float t1 = 0, t2 = 0;
        for (int w = 0; w < run.warps; ++w) {
            if (out.first) t1 += sums[w * slice + slot];
            if (out.second) t2 += secondSlices[w * slice + slot];
        }
        if (out.first) out.first[blockIdx.x * (long long)width + j] = t1;
        if (out.second) out.second[blockIdx.x * (long long)width + j] = t2;
    }
    add_partial_rows(run.sample, out, width, chunks);
}

// MARK: LayerNorm, alone, fused with adaLN modulation, and fused with the gated residual before it

// LayerNorm over rows (mean and 1/σ: biased variance, two passes in f32; RMSNorm when `mean` is null: 1/rms
// around 0), then y = x̂ · a + b with a, b chosen per
// row: (weight, bias) for a plain LayerNorm (either may be null), or (1 + scale[sample], shift[sample]) for the
// adaLN-fused form (modulation != 0, `tokens` rows per sample). With `branch` (else null, as gate and sum), the row
// is the gated residual x + gate[sample] ⊙ branch, rounded to T as it is written to `sum`: the residual add and the
// LayerNorm after it in one pass, normalising the stored sum (what the backward recomputes x̂ from). Writes the
// per-row mean and 1/σ for the backward.
#define LAYERNORM_FORWARD_PARAMETERS                                                                              \
    const T *x, const T *branch, const T *gate, T *sum, const T *weight, const T *bias, T *y, float *mean,        \
        float *rstd, long long rows, int width, double eps, long long tokens, int modulation, int vectors
#define LAYERNORM_FORWARD_ARGUMENTS \
    x, branch, gate, sum, weight, bias, y, mean, rstd, rows, width, eps, tokens, modulation, vectors
template <int P, bool packed> __device__ inline void layernorm_forward(LAYERNORM_FORWARD_PARAMETERS) {
    float add = modulation ? 1.0f : 0.0f;
    for (long long row = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32; row < rows;
         row += (long long)gridDim.x * blockDim.x / 32) {
        long long sample = row / tokens, offset = row * width;
        Row<P> v;  // the row; the gated sum replaces x in it
        load_row(v, x + offset, width, packed);
        if (branch) {
            Row<P> br;
            load_row(br, branch + offset, width, packed);
            ROW_LOOP(p, j) {
                if (j >= width) continue;
                float e[8], bv[8], g[8];
                unpack8(v.p[p], e); unpack8(br.p[p], bv);
                parameter8(gate + sample * width, j, width, packed, 0.0f, g);
                for (int k = 0; k < 8; ++k) e[k] += g[k] * bv[k];
                v.p[p] = pack8(e);  // rounded to T
                store_pack(sum + offset, j, width, packed, v.p[p]);
            }
        }
        float total = 0, squares = 0, e[8];
        ROW_LOOP(p, j) { unpack8(v.p[p], e); for (int k = 0; k < 8; ++k) total += e[k]; }  // zeros past the end
        float mu = mean ? warp_sum(total) / (float)width : 0.0f;  // a null mean: RMSNorm, around 0
        ROW_LOOP(p, j) {
            unpack8(v.p[p], e);
            for (int k = 0; k < 8; ++k) if (j + k < width) squares += (e[k] - mu) * (e[k] - mu);
        }
        float s = (float)(1.0 / sqrt((double)(warp_sum(squares) / (float)width) + eps));
        if ((threadIdx.x & 31) == 0) { if (mean) mean[row] = mu; rstd[row] = s; }
        const T* a = modulation ? weight + sample * width : weight;  // scale (1 + a) or weight a
        const T* b = modulation ? bias + sample * width : bias;
        ROW_LOOP(p, j) {
            if (j >= width) continue;
            float av[8], bv[8];
            unpack8(v.p[p], e);
            parameter8(a, j, width, packed, 1.0f - add, av);
            parameter8(b, j, width, packed, 0.0f, bv);
            for (int k = 0; k < 8; ++k) e[k] = (e[k] - mu) * s * (av[k] + add) + bv[k];
            store_pack(y + offset, j, width, packed, pack8(e));
        }
    }
}

// LayerNorm's backward by token runs: dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)) (+ residual; RMSNorm's, without
// mean(ĝ), when `mean` is null), ĝ = dy ⊙ a with
// a = weight (null: 1) or, in the adaLN-fused form, 1 + scale[sample]; `residual` (may be null) is the skip
// connection's gradient, added in the same pass so the block's backward needs no separate add. From the same read
// of dy and x, the column sums of the parameters' gradients: Σ dy (first: dShift or dBias) and Σ dy ⊙ x̂
// (second: dScale or dWeight); either may be null. A plain LayerNorm's parameters take one "sample" of every row.
#define LAYERNORM_BACKWARD_PARAMETERS                                                                             \
    const T *dy, const T *x, const T *weight, const float *mean, const float *rstd, const T *residual, T *dx,     \
        float *first, float *second, void *firstOut, void *secondOut, unsigned *counters, int outputsF32,         \
        int accumulate, long long tokens, int width, int chunkRows, int chunks, int modulation, int vectors
#define LAYERNORM_BACKWARD_ARGUMENTS                                                                              \
    dy, x, weight, mean, rstd, residual, dx, first, second, firstOut, secondOut, counters, outputsF32, accumulate, \
        tokens, width, chunkRows, chunks, modulation, vectors
template <int P, bool packed> __device__ inline void layernorm_backward(LAYERNORM_BACKWARD_PARAMETERS) {
    RunSums out = run_sums(first, second, firstOut, secondOut, counters, outputsF32, accumulate);
    float add = modulation ? 1.0f : 0.0f;
    TokenRun run = token_run(runShared, out, tokens, width, chunkRows, chunks);
    const T* a = modulation ? weight + run.sample * width : weight;
    RUN_ROW_LOOP(row, run) {
        // The residual's row is loaded with the others, not in the second pass, where its latency came on top of
        // theirs (DiT-XL/2: 5.06 → 4.51–4.55 ms a step).
        Row<P> g, xr, res;
        load_row(g, dy + row * width, width, packed);
        load_row(xr, x + row * width, width, packed);
        if (residual) load_row(res, residual + row * width, width, packed);
        float m = mean ? mean[row] : 0.0f, s = rstd[row], sumG = 0, sumGX = 0;
        ROW_LOOP(p, j) {
            if (j >= width) continue;
            float gv[8], xh[8], av[8];
            unpack8(g.p[p], gv); unpack8(xr.p[p], xh);
            parameter8(a, j, width, packed, 1.0f - add, av);
            for (int k = 0; k < 8; ++k) {
                xh[k] = (xh[k] - m) * s;  // x̂
                float gj = gv[k] * (av[k] + add);
                sumG += gj;
                sumGX += gj * xh[k];
            }
            if (run.first) run_add8(run.first, j, width, gv);
            if (run.second) { for (int k = 0; k < 8; ++k) xh[k] *= gv[k]; run_add8(run.second, j, width, xh); }
        }
        float meanG = mean ? warp_sum(sumG) / (float)width : 0.0f, meanGX = warp_sum(sumGX) / (float)width;
        ROW_LOOP(p, j) {
            if (j >= width) continue;
            float gv[8], xh[8], av[8], o[8];
            unpack8(g.p[p], gv); unpack8(xr.p[p], xh);
            parameter8(a, j, width, packed, 1.0f - add, av);
            if (residual) unpack8(res.p[p], o);
            else for (int k = 0; k < 8; ++k) o[k] = 0.0f;
            for (int k = 0; k < 8; ++k) o[k] += s * (gv[k] * (av[k] + add) - meanG - (xh[k] - m) * s * meanGX);
            store_pack(dx + row * width, j, width, packed, pack8(o));
        }
    }
    run_finish(run, runShared, out, width, chunks);
}

// MARK: adaLN modulation and gated residual (x [B, N, D], per-sample [B, D])

extern "C" __global__ void modulate(const T* x, const T* shift, const T* scale, T* y, long long tokens, int width,
                                    long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) {
        long long row = i / width, j = i % width, p = (row / tokens) * width + j;
        st(y, i, ld(x, i) * (1.0f + ld(scale, p)) + ld(shift, p));
    }
}

// out = x + gate[sample] ⊙ branch.
extern "C" __global__ void gated_residual(const T* x, const T* gate, const T* branch, T* out, long long tokens,
                                          int width, long long n, int vectors) {
    GRID_DEPENDENCY();
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

// One entry point per row kernel and pack count P (widths up to 256 · P; the host picks the smallest P). The
// forward's registers are capped so that more warps share an SM (FORWARD_BLOCKS 256-thread blocks): a warp has
// nothing in flight while it reduces a row, so the others must keep memory busy (DiT-XL/2: 5.43 → 4.57 ms a step).
// LayerNorm's backward is left uncapped: at 80 registers it spilled and was slower (4.76 → 5.51 ms). Each entry
// runs its kernel with `packed` a compile-time constant: with it a run-time flag, the element-by-element path's
// out-of-line calls (load_pack_elements) sat in the same code, and the forward spilled at its cap around them
// (24 bytes, 196 608 local-memory requests a launch; without: 4.58 → 3.96 ms a DiT-XL/2 step).
#define FORWARD_BLOCKS(P) ((P) <= 4 ? 4 : (P) <= 6 ? 3 : 2)
#define ROW_KERNELS(P)                                                                                            \
    extern "C" __global__ void __launch_bounds__(256, FORWARD_BLOCKS(P))                                          \
        layernorm_forward_##P(LAYERNORM_FORWARD_PARAMETERS) {                                                     \
        GRID_DEPENDENCY();                                                                                        \
        if (vectors) layernorm_forward<P, true>(LAYERNORM_FORWARD_ARGUMENTS);                                     \
        else layernorm_forward<P, false>(LAYERNORM_FORWARD_ARGUMENTS);                                            \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        layernorm_backward_##P(LAYERNORM_BACKWARD_PARAMETERS) {                                                   \
        GRID_DEPENDENCY();                                                                                        \
        if (vectors) layernorm_backward<P, true>(LAYERNORM_BACKWARD_ARGUMENTS);                                   \
        else layernorm_backward<P, false>(LAYERNORM_BACKWARD_ARGUMENTS);                                          \
    }
ROW_KERNELS(1)
ROW_KERNELS(2)
ROW_KERNELS(3)
ROW_KERNELS(4)
ROW_KERNELS(5)
ROW_KERNELS(6)
ROW_KERNELS(8)
ROW_KERNELS(12)
ROW_KERNELS(16)

// MARK: Per-sample scaling's backward: a row spread over a block, a thread per pack of 8 columns
//
// A kernel with no per-row statistics to reduce lays rows out the other way: thread t of a block holds columns
// 8t … 8t + 7 of each row (a block has ⌈width / 8⌉ threads in whole warps), so its per-sample column sums stay in
// its registers across the block's whole run of rows (no shared-memory slices), and it issues the loads of the next
// ROWS rows before it writes the current ones. The host launches as many blocks as the GPU holds at once, each
// sample's rows split evenly among its share. (With per-row statistics, as in LayerNorm, this layout lost: each
// row's block-wide sum costs a barrier, and LayerNorm's backward needed 128 registers a thread; BENCHMARKS.md,
// sixteenth session.)

// Rows a thread has in hand at once (twice that with the next ones in flight): f32 packs take twice the registers.
#ifdef ELEMENT_BF16
#define ROWS 2
#else
#define ROWS 1
#endif
#define PACK_THREADS 512  // widths up to 4 096 (the host checks)

// The block's run: rows [begin, end) of sample blockIdx.x / chunks, its chunk blockIdx.x % chunks of `chunks`
// nearly equal ones.
struct PackRun { long long sample, begin, end; };
__device__ inline PackRun pack_run(long long tokens, int chunks) {
    long long sample = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
    return {sample, sample * tokens + chunk * tokens / chunks, sample * tokens + (chunk + 1) * tokens / chunks};
}

// Row `row`'s pack at the thread's column j, or zeros for a row past the run or a column past the width.
__device__ inline Pack8 run_pack(const T* data, long long row, long long end, int j, int width, bool packed) {
    if (row < end && j < width) return load_pack(data + row * width, j, width, packed);
    float zero[8] = {};
    return pack8(zero);
}

// The thread's 8 columns of a block's partial row (`at`, 32-byte aligned when `packed`), those inside the width.
__device__ inline void store_partial(float* at, const float* v, int j, int width, bool packed) {
    if (packed) {
        ((float4*)at)[0] = make_float4(v[0], v[1], v[2], v[3]);
        ((float4*)at)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
        for (int k = 0; k < 8 && j + k < width; ++k) at[k] = v[k];
    }
}

// The backward of a per-sample scaling by token runs: out = dy ⊙ (add + g[sample]) and, from the same read of dy
// and c, the column sums Σ dy (first) and Σ dy ⊙ c (second), either may be null. modulate's backward (add 1,
// g = scale, c = x: dx, dShift, dScale) and the gated residual's (add 0, g = gate, c = branch: dBranch and dGate,
// no first).
#define PER_SAMPLE_SCALE_BACKWARD_PARAMETERS                                                                      \
    const T *dy, const T *c, const T *g, float add, T *out, float *first, float *second, void *firstOut,          \
        void *secondOut, unsigned *counters, int outputsF32, int accumulate, long long tokens, int width,         \
        int chunks, int vectors
#define PER_SAMPLE_SCALE_BACKWARD_ARGUMENTS                                                                       \
    dy, c, g, add, out, first, second, firstOut, secondOut, counters, outputsF32, accumulate, tokens, width,      \
        chunks, vectors
template <bool packed> __device__ inline void per_sample_scale_backward_rows(PER_SAMPLE_SCALE_BACKWARD_PARAMETERS) {
    RunSums sums = run_sums(first, second, firstOut, secondOut, counters, outputsF32, accumulate);
    float gv[8], sumFirst[8] = {}, sumSecond[8] = {};
    int j = 8 * threadIdx.x;
    PackRun run = pack_run(tokens, chunks);
    if (j < width) parameter8(g + run.sample * width, j, width, packed, 0.0f, gv);
    Pack8 ds[ROWS], cs[ROWS];  // the rows in hand: dy and c
    #pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        ds[r] = run_pack(dy, run.begin + r, run.end, j, width, packed);
        cs[r] = run_pack(c, run.begin + r, run.end, j, width, packed);
    }
    for (long long row0 = run.begin; row0 < run.end; row0 += ROWS) {
        Pack8 dn[ROWS], cn[ROWS];  // the next rows, in flight while these are written
        #pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            dn[r] = run_pack(dy, row0 + ROWS + r, run.end, j, width, packed);
            cn[r] = run_pack(c, row0 + ROWS + r, run.end, j, width, packed);
        }
        #pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            long long row = row0 + r;
            if (row >= run.end || j >= width) continue;
            float dv[8], cv[8];
            unpack8(ds[r], dv);
            unpack8(cs[r], cv);
            for (int k = 0; k < 8; ++k) {
                sumFirst[k] += dv[k];
                sumSecond[k] += dv[k] * cv[k];
                dv[k] *= add + gv[k];
            }
            store_pack(out + row * width, j, width, packed, pack8(dv));
        }
        #pragma unroll
        for (int r = 0; r < ROWS; ++r) { ds[r] = dn[r]; cs[r] = cn[r]; }
    }
    if (j < width) {
        long long at = blockIdx.x * (long long)width + j;
        if (first) store_partial(first + at, sumFirst, j, width, packed);
        if (second) store_partial(second + at, sumSecond, j, width, packed);
    }
    add_partial_rows(run.sample, sums, width, chunks);
}

extern "C" __global__ void __launch_bounds__(PACK_THREADS)
    per_sample_scale_backward(PER_SAMPLE_SCALE_BACKWARD_PARAMETERS) {
    GRID_DEPENDENCY();
    if (vectors) per_sample_scale_backward_rows<true>(PER_SAMPLE_SCALE_BACKWARD_ARGUMENTS);
    else per_sample_scale_backward_rows<false>(PER_SAMPLE_SCALE_BACKWARD_ARGUMENTS);
}

// MARK: Column sums: bias gradients
//
// Data [R, W]: accumulator[j] += Σ_r a[r, j]. A block of 16 × 16 threads takes a strip of 128 columns (a pack of 8
// per lane: a half-warp reads 256 contiguous bytes of a bf16 row) and a chunk of `chunkRows` rows (blockIdx.y);
// its 16 row slots take every 16th row of the chunk in order, SUM_UNROLL packs in flight per thread, and add up in
// slot order in shared memory into the chunk's partial row. The strip's last block to finish adds the chunks'
// partials in a fixed order into the accumulator: one launch, the same sums on every run.

#define SUM_LANES 16
#define SUM_SLOTS 16
#define SUM_UNROLL 8

template <bool packed>
__device__ inline void column_sums(const T* a, float* partial, unsigned* counters, float* accumulator, long long rows,
                                   int width, int chunkRows) {
    __shared__ float slots[SUM_SLOTS][SUM_LANES * 8];
    int lane = threadIdx.x, slot = threadIdx.y, j = (blockIdx.x * SUM_LANES + lane) * 8;
    long long begin = blockIdx.y * (long long)chunkRows, end = min(rows, begin + chunkRows);
    float total[8] = {};
    if (j < width) {
        #pragma unroll SUM_UNROLL
        for (long long row = begin + slot; row < end; row += SUM_SLOTS) {
            float v[8];
            unpack8(load_pack(a + row * width, j, width, packed), v);
            #pragma unroll
            for (int c = 0; c < 8; ++c) total[c] += v[c];
        }
    }
    #pragma unroll
    for (int c = 0; c < 8; ++c) slots[slot][lane * 8 + c] = total[c];
    __syncthreads();
    // Thread t < 128 adds the strip's column t over the slots in order: the chunk's partial row.
    constexpr int strip = SUM_LANES * 8;
    int thread = slot * SUM_LANES + lane, column = blockIdx.x * strip + thread % strip, half = thread / strip;
    if (half == 0 && column < width) {
        float t = 0;
        for (int s = 0; s < SUM_SLOTS; ++s) t += slots[s][thread];
        partial[blockIdx.y * (long long)width + column] = t;
    }
    if (!last_block(counters + blockIdx.x, gridDim.y)) return;
    // The strip's total: the two halves of the block add the even and the odd chunks in order, then each other.
    int chunks = gridDim.y;
    float* halves = &slots[0][0];  // [2][strip]
    halves[thread] = column < width ? sum_partials(partial + half * (long long)width + column, (chunks - half + 1) / 2,
                                                   2LL * width) : 0.0f;
    __syncthreads();
    if (half == 0 && column < width) accumulator[column] += halves[thread] + halves[strip + thread];
}

extern "C" __global__ void column_sums(const T* a, float* partial, unsigned* counters, float* accumulator,
                                       long long rows, int width, int chunkRows, int vectors) {
    GRID_DEPENDENCY();
    if (vectors) column_sums<true>(a, partial, counters, accumulator, rows, width, chunkRows);
    else column_sums<false>(a, partial, counters, accumulator, rows, width, chunkRows);
}

// accumulator[j] += Σ_s g[s, j] · sums[s, j]: the bias gradient of a layer whose output a per-sample gate scaled
// (gated residual), from the per-sample sums of the gradient that reached the gate. A block of 32 × 8 threads takes
// 32 columns; its row group r adds samples r, r + 8, … in order (loads independent of one another, so in flight
// together), then the groups add up in order.
extern "C" __global__ void scaled_sample_sums(const T* g, const float* sums, float* accumulator, int samples,
                                              int width) {
    GRID_DEPENDENCY();
    __shared__ float groups[8][32];
    int j = blockIdx.x * 32 + threadIdx.x, group = threadIdx.y;
    float total = 0;
    if (j < width) {
        #pragma unroll 8
        for (int s = group; s < samples; s += 8) total += ld(g, (long long)s * width + j) * sums[(long long)s * width + j];
    }
    groups[group][threadIdx.x] = total;
    __syncthreads();
    if (group == 0 && j < width) {
        float t = 0;
        for (int r = 0; r < 8; ++r) t += groups[r][threadIdx.x];
        accumulator[j] += t;
    }
}

// MARK: Activations

__device__ inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// GELU (tanh approximation) as x σ(2u), u = √(2/π)(x + 0.044715 x³), exactly as the CPU backend writes it.
extern "C" __global__ void gelu(const T* x, T* out, long long n) {
    GRID_DEPENDENCY();
    const float c = 0.7978845608f, a = 0.044715f;
    GRID_LOOP(i, n) {
        float v = ld(x, i);
        st(out, i, v * sigmoidf(2.0f * c * (v + a * v * v * v)));
    }
}

extern "C" __global__ void gelu_backward(const T* dy, const T* x, T* dx, long long n) {
    GRID_DEPENDENCY();
    const float c = 0.7978845608f, a = 0.044715f;
    GRID_LOOP(i, n) {
        float v = ld(x, i);
        float s = sigmoidf(2.0f * c * (v + a * v * v * v));
        float slope = 2.0f * c * (1.0f + 3.0f * a * v * v);
        st(dx, i, ld(dy, i) * (s + v * s * (1.0f - s) * slope));
    }
}

extern "C" __global__ void silu(const T* x, T* out, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) { float v = ld(x, i); st(out, i, v * sigmoidf(v)); }
}

extern "C" __global__ void silu_backward(const T* dy, const T* x, T* dx, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) {
        float v = ld(x, i), s = sigmoidf(v);
        st(dx, i, ld(dy, i) * s * (1.0f + v * (1.0f - s)));
    }
}

// MARK: GroupNorm
//
// Three launches, so every SM has work even when a batch has few (sample, group) rows of millions of elements:
// partial sums of x and x² over fixed chunks of each row (f64), each row's mean and 1/σ from its chunks added in
// order (so results repeat bit for bit), then y = (x − mean) · a_c + bias_c with a_c = rstd · weight_c (centring
// first: folding the mean into the shift would cancel where |mean| ≫ σ). Weight and bias (T, [C]) may be null.
// With `vectors` (planes of a multiple of 8 elements, 16-byte aligned tensors) both passes move packs of 8, which
// never straddle a channel's plane, so the index arithmetic is paid once a pack.

// Block r·chunks + k sums chunk k of row r into partials[2 (r·chunks + k)] (Σx) and [… + 1] (Σx²); chunks are
// whole packs of 8 with `vectors`.
extern "C" __global__ void group_norm_partials(const T* x, double* partials, long long length, int chunks,
                                               int vectors) {
    GRID_DEPENDENCY();
    __shared__ double shared[MAX_THREADS];
    long long row = blockIdx.x / chunks, per = (length + chunks - 1) / chunks;
    if (vectors) per = (per + 7) / 8 * 8;
    long long begin = (blockIdx.x % chunks) * per, end = min(length, begin + per);
    const T* in = x + row * length;
    double total = 0, squares = 0;
    if (vectors) {
        for (long long i = begin + 8 * threadIdx.x; i < end; i += 8 * blockDim.x) {
            float v[8];
            ld8(in, i, v);
            for (int k = 0; k < 8; ++k) { total += (double)v[k]; squares += (double)v[k] * v[k]; }
        }
    } else {
        for (long long i = begin + threadIdx.x; i < end; i += blockDim.x) {
            double v = (double)ld(in, i);
            total += v;
            squares += v * v;
        }
    }
    total = block_sum(total, shared);
    squares = block_sum(squares, shared);
    if (threadIdx.x == 0) { partials[2 * blockIdx.x] = total; partials[2 * blockIdx.x + 1] = squares; }
}

// One thread per row: mean and 1/σ (biased variance, E[x²] − mean² in f64) into statistics[2r], [2r + 1].
extern "C" __global__ void group_norm_statistics(const double* partials, float* statistics, long long length,
                                                 int chunks, double eps, long long rows) {
    GRID_DEPENDENCY();
    GRID_LOOP(row, rows) {
        double total = 0, squares = 0;
        for (int k = 0; k < chunks; ++k) {
            total += partials[2 * (row * chunks + k)];
            squares += partials[2 * (row * chunks + k) + 1];
        }
        double mean = total / (double)length, variance = fmax(squares / (double)length - mean * mean, 0.0);
        statistics[2 * row] = (float)mean;
        statistics[2 * row + 1] = (float)(1.0 / sqrt(variance + eps));
    }
}

extern "C" __global__ void group_norm_apply(const T* x, const T* weight, const T* bias, const float* statistics, T* y,
                                            int groups, int channelsPerGroup, long long plane, long long n, int vectors) {
    GRID_DEPENDENCY();
    long long length = channelsPerGroup * plane;
    if (vectors) {
        GRID_LOOP(p, n / 8) {
            long long i = p * 8, channelRow = i / plane;  // [B · C]
            long long row = channelRow / channelsPerGroup;
            int channel = (int)(channelRow % ((long long)groups * channelsPerGroup));
            float mean = statistics[2 * row], a = statistics[2 * row + 1] * (weight ? ld(weight, channel) : 1.0f);
            float b = bias ? ld(bias, channel) : 0.0f, v[8];
            ld8(x, i, v);
            for (int k = 0; k < 8; ++k) v[k] = (v[k] - mean) * a + b;
            st8(y, i, v);
        }
        return;
    }
    GRID_LOOP(i, n) {
        long long row = i / length;
        int channel = (int)(row % groups) * channelsPerGroup + (int)((i % length) / plane);
        float a = statistics[2 * row + 1] * (weight ? ld(weight, channel) : 1.0f);
        st(y, i, (ld(x, i) - statistics[2 * row]) * a + (bias ? ld(bias, channel) : 0.0f));
    }
}

// MARK: Embeddings
//
// Indices are checked here, not on the host (a download would stall the step until the GPU drains): an index outside
// the table's `rows` is skipped (its output row is zero) and the first one seen goes into `errors` [set, op, position,
// index, rows], which the backend reads at its next host read and reports (CUDABackend.takeIndexError).

__device__ inline bool index_in_table(int index, int rows, long long position, int* errors, int op) {
    if (index >= 0 && index < rows) return true;
    if (atomicCAS(errors, 0, 1) == 0) {
        errors[1] = op;
        errors[2] = (int)position;
        errors[3] = index;
        errors[4] = rows;
    }
    return false;
}

extern "C" __global__ void embedding(const T* table, const int* indices, T* out, int width, long long n, int rows,
                                     int* errors) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) {
        long long row = i / width, j = i % width;
        int index = indices[row];
        if (index_in_table(index, rows, row, errors, 0)) out[i] = table[(long long)index * width + j];
        else st(out, i, 0.0f);
    }
}

// One thread per column; each takes the indices in order, so repeated indices add up in a fixed order. The table's
// gradient is f32 whatever T is.
extern "C" __global__ void embedding_backward(const T* dOut, const int* indices, float* dTable, int width,
                                              long long count, int rows, int* errors) {
    GRID_DEPENDENCY();
    GRID_LOOP(j, (long long)width) {
        for (long long i = 0; i < count; ++i) {
            int index = indices[i];
            if (index_in_table(index, rows, i, errors, 1)) dTable[(long long)index * width + j] += ld(dOut, i * width + j);
        }
    }
}

// out[b, i] = cos(t_b f_i), out[b, half + i] = sin(t_b f_i), zero last column for odd dims. t stays f32 (a bf16 t
// could not even tell 999 from 1000).
extern "C" __global__ void timestep_embedding(const float* t, const float* frequencies, T* out, int dim, int half,
                                              long long n) {
    GRID_DEPENDENCY();
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
