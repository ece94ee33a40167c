// Flash attention (FlashAttention-2 style) on bf16 operands with f32 accumulation on the tensor cores
// (mma.sync m16n8k16; on sm_90a, an opt-in dK/dV kernel on wgmma, below). Nothing of size Nq × Nk is ever
// stored: the forward keeps the output and the per-row log-sum-exp, the backward rebuilds the probabilities from
// them.
//
// Operands are [B, H, N, Dh]-indexed with explicit element strides (batch, head, row) and a contiguous head dim,
// so token-major [B, N, H, Dh] or packed qkv [B, N, 3, H, Dh] pass without a permute. lse, delta are contiguous
// [B, H, Nq] f32; keyMask is i32 [B, Nk] or null.
//
// The head dim is padded with zeros in shared memory to D (a multiple of 16, the mma's k): zero columns add
// nothing to q·k and produce columns of the output that are never stored. Rows beyond Nq or Nk are zero too, and
// keys beyond Nk or masked get a score of −∞. A query with no attended key outputs zeros, lse = −∞ and no gradient.
//
// Each CTA is 4 warps (8 in the forward and the short-sequence dQ kernel); a warp owns 16 rows (queries in the
// forward and dQ, keys in dK/dV), so the warps never combine partial results: no atomics, a fixed summation order,
// bit-identical results from run to run.

#define FLASH_THREADS 128
#define NEGATIVE_INFINITY (-__int_as_float(0x7f800000))
#define POSITIVE_INFINITY (__int_as_float(0x7f800000))
#define LOG2_E 1.4426950408889634f
#define LN_2 0.6931471805599453f

struct Strides { long long batch, head, row; };

// A [B, H, N, Dh] operand's (b, h) slice.
template <typename T> __device__ inline T* slice(T* base, Strides s, int b, int h) {
    return base + b * s.batch + h * s.head;
}

// Two floats rounded to bf16 (nearest even) in one register, `low` in the low half as the mma fragments expect.
__device__ inline u32 pack_bf16(float low, float high) {
    u32 packed;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(high), "f"(low));
    return packed;
}

// c += a · b for a 16×16 bf16 A (row-major fragment), a 16×8 bf16 B (column fragment), f32 C.
__device__ inline void mma(float* c, const u32* a, const u32* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Fragment loads from a shared tile of row stride S (elements), by ldmatrix: lane l gives the address of row l % 8
// of 8 × 8 block l / 8 and receives, per block, the element pair the PTX m16n8k16 layout assigns it (g = l / 4 the
// row of A and C or the column of B, t = l % 4 the pair along k). One instruction replaces 2 to 4 32-bit loads.

// A[i][k] = M[row0 + i][col0 + k], 16 × 16 (blocks: rows 0–7 / 8–15 × k 0–7, then k 8–15).
template <int S> __device__ inline void load_a(u32* a, const u16* m, int row0, int col0) {
    int lane = threadIdx.x & 31, block = lane >> 3;
    const u16* row = m + (row0 + (lane & 7) + (block & 1) * 8) * S + col0 + (block >> 1) * 8;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                 : "r"(shared_address(row)));
}

// A[i][k] = M[col0 + k][row0 + i], 16 × 16: A stored transposed, its rows are the source's columns (dS in
// dQ = dS K from the stored dSᵀ); ldmatrix.trans reads each 8 × 8 block transposed.
template <int S> __device__ inline void load_a_transposed(u32* a, const u16* m, int row0, int col0) {
    int lane = threadIdx.x & 31, block = lane >> 3;
    const u16* row = m + (col0 + (lane & 7) + (block >> 1) * 8) * S + row0 + (block & 1) * 8;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                 : "r"(shared_address(row)));
}

// B[k][n] = M[n0 + n][k0 + k], 16 × 8 (the source's rows are B's columns, as K is for S = Q Kᵀ); blocks k 0–7
// and k 8–15, addressed by lanes 0–15 (the others repeat them).
template <int S> __device__ inline void load_b(u32* b, const u16* m, int n0, int k0) {
    int lane = threadIdx.x & 31;
    const u16* row = m + (n0 + (lane & 7)) * S + k0 + ((lane >> 3) & 1) * 8;
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
                 : "=r"(b[0]), "=r"(b[1])
                 : "r"(shared_address(row)));
}

// B[k][n] = M[k0 + k][n0 + n] for two 16 × 8 tiles (n0.. and n0 + 8..): the source's rows are B's rows (V in
// O = P V), so the pairs along k are a column apart; ldmatrix.trans reads the four 8 × 8 blocks transposed.
// b[0], b[1] hold the first tile, b[2], b[3] the second.
template <int S> __device__ inline void load_b_transposed(u32* b, const u16* m, int k0, int n0) {
    int lane = threadIdx.x & 31, block = lane >> 3;
    const u16* row = m + (k0 + (lane & 7) + (block & 1) * 8) * S + n0 + (block >> 1) * 8;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(shared_address(row)));
}

// The A fragment (16 rows × 16 k) of a product whose left operand is a C accumulator tile pair: columns
// 16·kk.. of a warp's 16-row score tile become the k of the next product (P in O = P V, dS in dQ = dS K).
__device__ inline void accumulator_to_a(u32* a, const float (&c0)[4], const float (&c1)[4]) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}

// acc (a warp's 16 × D accumulator) += c · M, c a warp's 16 × K accumulator tile taken as the A operand (P in
// O = P V, Pᵀ in dV = Pᵀ dO, dS in dQ = dS K, dSᵀ in dK = dSᵀ Q) and M a shared [K][D + 8] tile whose rows are k.
template <int K, int D>
__device__ inline void accumulate_product(float (&acc)[D / 8][4], const float (&c)[K / 8][4], const u16* m) {
#pragma unroll
    for (int kk = 0; kk < K / 16; ++kk) {
        u32 aFragment[4];
        accumulator_to_a(aFragment, c[2 * kk], c[2 * kk + 1]);
#pragma unroll
        for (int n2 = 0; n2 < D / 16; ++n2) {
            u32 bFragment[4];
            load_b_transposed<D + 8>(bFragment, m, kk * 16, n2 * 16);
            mma(acc[2 * n2], aFragment, bFragment);
            mma(acc[2 * n2 + 1], aFragment, bFragment + 2);
        }
    }
}

// Rows row0.. of a [rows, dh] matrix (row stride `stride`, dh contiguous) into a shared [ROWS][D + 8] tile; rows
// ≥ rows and columns ≥ dh are zero. `vectors`: every row start is 16-byte aligned and dh % 8 == 0, so each chunk
// of 8 is one cp.async (asynchronous, Common.cuh); otherwise element by element (synchronous).
// The 8 extra columns per row shift consecutive rows by 16 bytes mod 128, so fragment loads and ldmatrix hit
// distinct banks.
template <int ROWS, int D, int THREADS = FLASH_THREADS>
__device__ inline void load_tile(u16* tile, const u16* source, long long stride, int row0, int rows, int dh,
                                 bool vectors) {
    constexpr int chunks = D / 8;
    for (int c = threadIdx.x; c < ROWS * chunks; c += THREADS) {
        int r = c / chunks, column = (c % chunks) * 8, row = row0 + r;
        u16* target = tile + r * (D + 8) + column;
        const u16* from = source + row * stride + column;
        if (vectors && row < rows && column < dh) {
            copy_async16(target, from);
        } else if (vectors) {
            *(uint4*)target = make_uint4(0, 0, 0, 0);
        } else {
            for (int e = 0; e < 8; ++e) target[e] = row < rows && column + e < dh ? from[e] : (u16)0;
        }
    }
}

// A warp's 16 × D accumulator (acc[n] = columns 8n.., C layout) as bf16 rows row0.. of a [rows, dh] matrix,
// row g scaled by factor[0] and row g + 8 by factor[1].
template <int D> __device__ inline void store_rows(u16* target, long long stride, int row0, int rows, int dh,
                                                   const float (&acc)[D / 8][4], const float* factor, bool vectors) {
    int lane = threadIdx.x & 31;
    for (int half = 0; half < 2; ++half) {
        int row = row0 + (lane >> 2) + 8 * half;
        if (row >= rows) continue;
        u16* out = target + row * stride;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            int column = n * 8 + 2 * (lane & 3);
            u32 packed = pack_bf16(acc[n][2 * half] * factor[half], acc[n][2 * half + 1] * factor[half]);
            if (vectors && column < dh) {
                *(u32*)(out + column) = packed;
            } else {
                if (column < dh) out[column] = (u16)(packed & 0xffff);
                if (column + 1 < dh) out[column + 1] = (u16)(packed >> 16);
            }
        }
    }
}

// 0 for an attended key inside [0, nk), −∞ otherwise: added to the scores.
__device__ inline float key_bias(const int* mask, int b, int nk, int key) {
    return key < nk && (mask == nullptr || mask[(long long)b * nk + key] != 0) ? 0.0f : NEGATIVE_INFINITY;
}

// Sum or max over the four lanes that hold one row of a C tile (lanes 4g .. 4g + 3).
__device__ inline float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffff, x, 1);
    return x + __shfl_xor_sync(0xffffffff, x, 2);
}
__device__ inline float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
}

// c[n] += A · Mᵀ for one warp: A its 16 × D fragments in registers (Q or dO), M a shared [N][D + 8] tile whose
// rows are the product's columns (K in S = Q Kᵀ, V in dP = dO Vᵀ).
template <int N, int D>
__device__ inline void product_with_rows(float (&c)[N / 8][4], const u32 (&a)[D / 16][4], const u16* m) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int n = 0; n < N / 8; ++n) {
            u32 bFragment[2];
            load_b<D + 8>(bFragment, m, n * 8, kk * 16);
            mma(c[n], a[kk], bFragment);
        }
    }
}

// Key tile key0.. of K and V into a buffer (K then V, BN rows each) and its key biases: one commit group.
template <int BN, int D, int THREADS = FLASH_THREADS>
__device__ inline void load_keys(u16* buffer, float* bias, const u16* kBase, const u16* vBase, Strides ks, Strides vs,
                                 const int* mask, int b, int key0, int nk, int dh, bool vectors) {
    load_tile<BN, D, THREADS>(buffer, kBase, ks.row, key0, nk, dh, vectors);
    load_tile<BN, D, THREADS>(buffer + BN * (D + 8), vBase, vs.row, key0, nk, dh, vectors);
    for (int j = threadIdx.x; j < BN; j += THREADS) bias[j] = key_bias(mask, b, nk, key0 + j);
    commit_copies();
}

// Every kernel walks its tiles (key tiles, or query tiles for dK/dV) through two shared buffers, loading each with
// one function (load_keys, load_queries): tile 0 before the loop, tile t + 1 while tile t is computed:
//     for each tile t: __syncthreads(); load tile t + 1 into buffer (t + 1) & 1; compute on buffer t & 1;
//                      wait_copies<0>()
// One __syncthreads per tile, at its start, both shows tile t to every warp (each thread waited for its own copies
// at the end of tile t − 1) and ensures every warp is done with the buffer the prefetch of tile t + 1 overwrites.
// (The loop is written out in each kernel: with the computation in a lambda too, the local ptxas gave dQ at D = 80
// 130 registers instead of 128; the H100's NVRTC allocates differently again, hence DQ_BLOCKS below.)

// MARK: Forward: one CTA of 8 warps per (128-query tile, pair), looping over 64-key tiles with the online softmax.
// (64 queries and 4 warps, the first version, read each K and V tile twice as often from L2: DiT-XL/2's 28
// forwards took 4.32 ms a step against 3.81–3.97; BENCHMARKS.md, fourteenth session.)

#define FORWARD_QUERIES 128
#define FORWARD_KEYS 64
#define FORWARD_THREADS (2 * FORWARD_QUERIES)

template <int D>
__device__ inline void flash_forward(const u16* q, const u16* k, const u16* v, const int* mask, u16* o, float* lse,
                                     Strides qs, Strides ks, Strides vs, Strides os, int nq, int nk, int dh,
                                     int heads, float scaleLog2, int vectors) {
    constexpr int S = D + 8, BM = FORWARD_QUERIES, BN = FORWARD_KEYS;
    static_assert(BM == 2 * BN, "the Q tile waits in the second key buffer");
    extern __shared__ __align__(16) u16 shared[];
    u16* buffers = shared;                            // two key buffers of 2·BN rows; Q waits in the second
    float* keyBias = (float*)(buffers + 4 * BN * S);  // [2][BN]
    int pair = blockIdx.y, b = pair / heads, h = pair % heads, row0 = blockIdx.x * BM;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const u16* kBase = slice(k, ks, b, h);
    const u16* vBase = slice(v, vs, b, h);

    auto loadKeys = [&](int tile, int buffer) {
        load_keys<BN, D, FORWARD_THREADS>(buffers + buffer * 2 * BN * S, keyBias + buffer * BN, kBase, vBase, ks, vs,
                                          mask, b, tile * BN, nk, dh, vectors);
    };
    load_tile<BM, D, FORWARD_THREADS>(buffers + 2 * BN * S, slice(q, qs, b, h), qs.row, row0, nq, dh, vectors);
    loadKeys(0, 0);
    wait_copies<0>();
    __syncthreads();
    u32 qFragment[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) load_a<S>(qFragment[kk], buffers + 2 * BN * S, warp * 16, kk * 16);

    // Per thread: rows g and g + 8 of the warp's 16. Scores are kept in log2 units (scale · log2 e folded in), so
    // the softmax needs exp2 only; rowSum is this thread's share of the row's Σ 2^(s − rowMax).
    float acc[D / 8][4] = {};
    float rowMax[2] = {NEGATIVE_INFINITY, NEGATIVE_INFINITY}, rowSum[2] = {0, 0};
    for (int tile = 0, tiles = (nk + BN - 1) / BN; tile < tiles; ++tile) {
        __syncthreads();
        if (tile + 1 < tiles) loadKeys(tile + 1, (tile + 1) & 1);
        const u16* kTile = buffers + (tile & 1) * 2 * BN * S;
        const float* bias = keyBias + (tile & 1) * BN;

        float s[BN / 8][4] = {};
        product_with_rows<BN, D>(s, qFragment, kTile);
        float tileMax[2] = {NEGATIVE_INFINITY, NEGATIVE_INFINITY};
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[n][e] = s[n][e] * scaleLog2 + bias[n * 8 + 2 * (lane & 3) + (e & 1)];
                tileMax[e >> 1] = fmaxf(tileMax[e >> 1], s[n][e]);
            }
        }
        float base[2];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            float newMax = fmaxf(rowMax[half], quad_max(tileMax[half]));
            // While every key seen is masked the max is −∞; subtracting 0 instead keeps exp2(−∞ − base) = 0.
            base[half] = newMax == NEGATIVE_INFINITY ? 0.0f : newMax;
            float correction = exp2f(rowMax[half] - base[half]);
            rowMax[half] = newMax;
            rowSum[half] *= correction;
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                acc[n][2 * half] *= correction;
                acc[n][2 * half + 1] *= correction;
            }
        }
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[n][e] = exp2f(s[n][e] - base[e >> 1]);
                rowSum[e >> 1] += s[n][e];
            }
        }
        accumulate_product<BN, D>(acc, s, kTile + BN * S);
        wait_copies<0>();
    }

    float factor[2];
    for (int half = 0; half < 2; ++half) {
        float total = quad_sum(rowSum[half]);
        int row = row0 + warp * 16 + (lane >> 2) + 8 * half;
        // lse = ln Σ e^(scale·s) = rowMax · ln 2 + ln total (rowMax is in log2 units); −∞ with no attended key.
        if ((lane & 3) == 0 && row < nq)
            lse[(long long)pair * nq + row] = total > 0 ? rowMax[half] * LN_2 + logf(total) : NEGATIVE_INFINITY;
        factor[half] = total > 0 ? 1.0f / total : 0.0f;
    }
    store_rows<D>(slice(o, os, b, h), os.row, row0 + warp * 16, nq, dh, acc, factor, vectors);
}

// MARK: Backward: the dQ kernel, then the dK/dV kernel (no atomics: deterministic)

// dQ: one CTA per (64-query tile, pair), looping over 32-key tiles double-buffered as in the forward; each warp
// owns 16 queries: S = Q Kᵀ, P = exp2(S − lse), dP = dO Vᵀ, dS = P ⊙ (dP − δ), dQ += dS K.
// It also writes, for its rows, δ = Σ_d dO ⊙ O (f32) and the lse in log2 units with −∞ (no attended key) made +∞,
// so that exp2(s − lse) = 0 for every key of the row: the dK/dV kernel, launched after it, reads both.
#define DQ_QUERIES 64
#define DQ_KEYS 32

__device__ inline float lse_log2(float lse) { return lse == NEGATIVE_INFINITY ? POSITIVE_INFINITY : lse * LOG2_E; }

template <int D>
__device__ inline void flash_backward_dq(const u16* q, const u16* k, const u16* v, const u16* o, const u16* dO,
                                         const float* lse, const int* mask, u16* dq, float* delta, float* lseLog2,
                                         Strides qs, Strides ks, Strides vs, Strides os, Strides gs, Strides dqs,
                                         int nq, int nk, int dh, int heads, float scale, float scaleLog2,
                                         int vectors) {
    constexpr int S = D + 8, BM = DQ_QUERIES, BN = DQ_KEYS;
    static_assert(BM == 2 * BN && FLASH_THREADS == 2 * BM, "O waits in the second key buffer; two threads a row");
    extern __shared__ __align__(16) u16 shared[];
    u16* qTile = shared;
    u16* gTile = qTile + BM * S;
    u16* buffers = gTile + BM * S;                    // two key buffers of 2·BN rows; O waits in the second
    float* keyBias = (float*)(buffers + 4 * BN * S);  // [2][BN]
    float* deltaTile = keyBias + 2 * BN;              // [BM]
    const u16* oTile = buffers + 2 * BN * S;
    int pair = blockIdx.y, b = pair / heads, h = pair % heads, row0 = blockIdx.x * BM;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const u16* kBase = slice(k, ks, b, h);
    const u16* vBase = slice(v, vs, b, h);
    load_tile<BM, D>(qTile, slice(q, qs, b, h), qs.row, row0, nq, dh, vectors);
    load_tile<BM, D>(gTile, slice(dO, gs, b, h), gs.row, row0, nq, dh, vectors);
    load_tile<BM, D>(buffers + 2 * BN * S, slice(o, os, b, h), os.row, row0, nq, dh, vectors);
    load_keys<BN, D>(buffers, keyBias, kBase, vBase, ks, vs, mask, b, 0, nk, dh, vectors);
    wait_copies<0>();
    __syncthreads();
    {
        // δ of the CTA's rows: two threads a row, each summing half the (zero-padded) columns in order.
        int r = threadIdx.x >> 1, part = (threadIdx.x & 1) * (D / 2), row = row0 + r;
        float total = 0;
        for (int d = part; d < part + D / 2; ++d) total += bf16_to_f32(oTile[r * S + d]) * bf16_to_f32(gTile[r * S + d]);
        total += __shfl_xor_sync(0xffffffff, total, 1);
        if ((threadIdx.x & 1) == 0) {
            deltaTile[r] = total;
            if (row < nq) {
                long long index = (long long)pair * nq + row;
                delta[index] = total;
                lseLog2[index] = lse_log2(lse[index]);
            }
        }
    }
    __syncthreads();
    u32 qFragment[D / 16][4], gFragment[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        load_a<S>(qFragment[kk], qTile, warp * 16, kk * 16);
        load_a<S>(gFragment[kk], gTile, warp * 16, kk * 16);
    }
    float rowLse[2], rowDelta[2];
    for (int half = 0; half < 2; ++half) {
        int r = warp * 16 + (lane >> 2) + 8 * half, row = row0 + r;
        rowLse[half] = row < nq ? lse_log2(lse[(long long)pair * nq + row]) : POSITIVE_INFINITY;
        rowDelta[half] = deltaTile[r];
    }

    float dqAcc[D / 8][4] = {};
    // load_keys called directly here: through a loadKeys lambda as the other kernels have, ptxas scheduled this
    // kernel 0.9 ms a DiT-XL/2 step slower (BENCHMARKS.md).
    for (int tile = 0, tiles = (nk + BN - 1) / BN; tile < tiles; ++tile) {
        __syncthreads();
        int next = (tile + 1) & 1;
        if (tile + 1 < tiles)
            load_keys<BN, D>(buffers + next * 2 * BN * S, keyBias + next * BN, kBase, vBase, ks, vs, mask, b,
                             (tile + 1) * BN, nk, dh, vectors);
        const u16* kTile = buffers + (tile & 1) * 2 * BN * S;
        const float* bias = keyBias + (tile & 1) * BN;

        float s[BN / 8][4] = {}, dp[BN / 8][4] = {};
        product_with_rows<BN, D>(s, qFragment, kTile);
        product_with_rows<BN, D>(dp, gFragment, kTile + BN * S);
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float p = exp2f(s[n][e] * scaleLog2 + bias[n * 8 + 2 * (lane & 3) + (e & 1)] - rowLse[e >> 1]);
                dp[n][e] = p * (dp[n][e] - rowDelta[e >> 1]);
            }
        }
        accumulate_product<BN, D>(dqAcc, dp, kTile);
        wait_copies<0>();
    }
    const float scales[2] = {scale, scale};
    store_rows<D>(slice(dq, dqs, b, h), dqs.row, row0 + warp * 16, nq, dh, dqAcc, scales, vectors);
}

// dK, dV: one CTA per (64-key tile, pair), looping over 32-query tiles double-buffered (Q, dO, lse and δ of tile
// t + 1 load while tile t is computed). Each warp owns 16 keys and works with transposed scores: Sᵀ = K Qᵀ,
// Pᵀ = exp2(Sᵀ − lse), dPᵀ = V dOᵀ, dSᵀ = Pᵀ ⊙ (dPᵀ − δ); dV += Pᵀ dO, dK += dSᵀ Q.
#define DKV_KEYS 64
#define DKV_QUERIES 32

// The lse (log2 units) and δ of query tile query0.., by asynchronous copies (the caller commits them).
template <int BM>
__device__ inline void load_query_statistics(float* lseTile, float* deltaTile, const float* lseLog2,
                                             const float* delta, int pair, int query0, int nq) {
    for (int j = threadIdx.x; j < BM; j += FLASH_THREADS) {
        long long row = (long long)pair * nq + query0 + j;
        if (query0 + j < nq) {
            copy_async4(lseTile + j, lseLog2 + row);
            copy_async4(deltaTile + j, delta + row);
        } else {
            lseTile[j] = POSITIVE_INFINITY;  // rows beyond Nq get P = 0
            deltaTile[j] = 0.0f;
        }
    }
}

// Query tile query0.. of Q and dO into a buffer (Q then dO, BM rows each) with its lse and δ: one commit group.
template <int BM, int D>
__device__ inline void load_queries(u16* buffer, float* lseTile, float* deltaTile, const u16* qBase,
                                    const u16* gBase, Strides qs, Strides gs, const float* lseLog2,
                                    const float* delta, int pair, int query0, int nq, int dh, bool vectors) {
    load_tile<BM, D>(buffer, qBase, qs.row, query0, nq, dh, vectors);
    load_tile<BM, D>(buffer + BM * (D + 8), gBase, gs.row, query0, nq, dh, vectors);
    load_query_statistics<BM>(lseTile, deltaTile, lseLog2, delta, pair, query0, nq);
    commit_copies();
}

// A warp's 16 keys × BM queries of Sᵀ and dPᵀ (C tiles) into Pᵀ = exp2(Sᵀ · scale log2 e + key bias − lse) and
// dSᵀ = Pᵀ ⊙ (dPᵀ − δ), in place; bias[0], bias[1] are the key biases of the thread's rows g and g + 8.
template <int BM>
__device__ inline void transposed_score_gradients(float (&s)[BM / 8][4], float (&dp)[BM / 8][4], const float* bias,
                                                  const float* lseTile, const float* deltaTile, float scaleLog2) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int n = 0; n < BM / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            int column = n * 8 + 2 * (lane & 3) + (e & 1);
            float p = exp2f(s[n][e] * scaleLog2 + bias[e >> 1] - lseTile[column]);
            s[n][e] = p;
            dp[n][e] = p * (dp[n][e] - deltaTile[column]);
        }
    }
}

// A warp's dSᵀ tile as rows key0 + g (+ 8) of the pair's stored dSᵀ (BN-key tiles, gridDim.x of them), columns
// query0 + 8n + 2t, + 1: one u32 a pair.
template <int BM, int BN>
__device__ inline void store_transposed_score_gradients(u16* dsT, const float (&ds)[BM / 8][4], int pair, int key0,
                                                        int query0, int dsColumns) {
    int lane = threadIdx.x & 31;
    u16* rows = dsT + ((long long)pair * gridDim.x * BN + key0 + (lane >> 2)) * dsColumns + query0 + 2 * (lane & 3);
#pragma unroll
    for (int n = 0; n < BM / 8; ++n) {
        *(u32*)(rows + n * 8) = pack_bf16(ds[n][0], ds[n][1]);
        *(u32*)(rows + 8 * dsColumns + n * 8) = pack_bf16(ds[n][2], ds[n][3]);
    }
}

// SCORES: the kernel also stores dSᵀ (bf16, unscaled) into dsT [B·H][keys padded to 64][dsColumns] for the dQ
// kernel of the short-sequence backward (below). Keys past Nk and queries past Nq up to the 32-query tile hold
// zeros (P = 0 there); columns past that stay unwritten, and feed only dQ rows past Nq, which are never stored.
template <int D, bool SCORES>
__device__ inline void flash_backward_dkv(const u16* q, const u16* k, const u16* v, const u16* dO,
                                          const float* lseLog2, const float* delta, const int* mask, u16* dk, u16* dv,
                                          Strides qs, Strides ks, Strides vs, Strides gs, Strides dks, Strides dvs,
                                          int nq, int nk, int dh, int heads, float scale, float scaleLog2,
                                          int vectors, u16* dsT, int dsColumns) {
    constexpr int S = D + 8, BN = DKV_KEYS, BM = DKV_QUERIES;
    extern __shared__ __align__(16) u16 shared[];
    u16* kTile = shared;
    u16* vTile = kTile + BN * S;
    u16* buffers = vTile + BN * S;                     // two query buffers of 2·BM rows (Q then dO)
    float* lseTiles = (float*)(buffers + 4 * BM * S);  // [2][BM]
    float* deltaTiles = lseTiles + 2 * BM;             // [2][BM]
    int pair = blockIdx.y, b = pair / heads, h = pair % heads, key0 = blockIdx.x * BN;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const u16* qBase = slice(q, qs, b, h);
    const u16* gBase = slice(dO, gs, b, h);
    load_tile<BN, D>(kTile, slice(k, ks, b, h), ks.row, key0, nk, dh, vectors);
    load_tile<BN, D>(vTile, slice(v, vs, b, h), vs.row, key0, nk, dh, vectors);
    auto loadQueries = [&](int tile, int buffer) {
        load_queries<BM, D>(buffers + buffer * 2 * BM * S, lseTiles + buffer * BM, deltaTiles + buffer * BM, qBase,
                            gBase, qs, gs, lseLog2, delta, pair, tile * BM, nq, dh, vectors);
    };
    loadQueries(0, 0);
    wait_copies<0>();
    float bias[2];
    for (int half = 0; half < 2; ++half) bias[half] = key_bias(mask, b, nk, key0 + warp * 16 + (lane >> 2) + 8 * half);

    float dkAcc[D / 8][4] = {}, dvAcc[D / 8][4] = {};
    for (int tile = 0, tiles = (nq + BM - 1) / BM; tile < tiles; ++tile) {
        __syncthreads();
        if (tile + 1 < tiles) loadQueries(tile + 1, (tile + 1) & 1);
        const u16* qTile = buffers + (tile & 1) * 2 * BM * S;
        const u16* gTile = qTile + BM * S;
        const float* lseTile = lseTiles + (tile & 1) * BM;
        const float* deltaTile = deltaTiles + (tile & 1) * BM;

        float s[BM / 8][4] = {}, dp[BM / 8][4] = {};
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            u32 kFragment[4], vFragment[4];
            load_a<S>(kFragment, kTile, warp * 16, kk * 16);
            load_a<S>(vFragment, vTile, warp * 16, kk * 16);
#pragma unroll
            for (int n = 0; n < BM / 8; ++n) {
                u32 bFragment[2];
                load_b<S>(bFragment, qTile, n * 8, kk * 16);
                mma(s[n], kFragment, bFragment);
                load_b<S>(bFragment, gTile, n * 8, kk * 16);
                mma(dp[n], vFragment, bFragment);
            }
        }
        transposed_score_gradients<BM>(s, dp, bias, lseTile, deltaTile, scaleLog2);
        if (SCORES) store_transposed_score_gradients<BM, BN>(dsT, dp, pair, key0 + warp * 16, tile * BM, dsColumns);
        accumulate_product<BM, D>(dvAcc, s, gTile);
        accumulate_product<BM, D>(dkAcc, dp, qTile);
        wait_copies<0>();
    }
    const float one[2] = {1, 1}, scales[2] = {scale, scale};
    store_rows<D>(slice(dv, dvs, b, h), dvs.row, key0 + warp * 16, nk, dh, dvAcc, one, vectors);
    store_rows<D>(slice(dk, dks, b, h), dks.row, key0 + warp * 16, nk, dh, dkAcc, scales, vectors);
}

// MARK: Short-sequence backward: δ, then dK/dV storing dSᵀ, then dQ = dS K from it
//
// When B·H·Nk·Nq scores fit a budget (DiT at 256 tokens: 134 MB) and O, dO are dense, the dQ kernel need not
// rebuild S, P and dP (three products a tile) from Q, K, V and dO: the dK/dV kernel already has dSᵀ in registers
// and stores it, and dQ becomes one product over memory it reads once. δ and the lse in log2 units then come from a
// small pass first.

// δ = Σ_d dO ⊙ O and the lse in log2 units for every (pair, query) row, where O and dO are dense arrays of rows,
// token-major ([B, N, H, Dh], as the merged heads are) or head-major ([B, H, N, Dh]): the rows lie back to back in
// memory, so a block of 32 rows · Dh/8 threads reads 16 bytes a thread, coalesced, and adds each row's Dh/8
// partial sums in order.
extern "C" __global__ void flash_backward_delta(const u16* o, const u16* dO, const float* lse, float* delta,
                                                float* lseLog2, int nq, int dh, int heads, long long rows,
                                                int tokenMajor) {
    GRID_DEPENDENCY();
    __shared__ float partial[512];
    int packs = dh / 8;
    long long first = blockIdx.x * 32LL, pack = first * packs + threadIdx.x;
    float total = 0;
    if (pack < rows * packs) {
        uint4 a = *(const uint4*)(o + pack * 8), g = *(const uint4*)(dO + pack * 8);
        const u32 av[4] = {a.x, a.y, a.z, a.w}, gv[4] = {g.x, g.y, g.z, g.w};
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            total += __uint_as_float(av[w] << 16) * __uint_as_float(gv[w] << 16);
            total += __uint_as_float(av[w] & 0xFFFF0000u) * __uint_as_float(gv[w] & 0xFFFF0000u);
        }
    }
    partial[threadIdx.x] = total;
    __syncthreads();
    long long index = first + threadIdx.x;  // the row in memory order: (b, query, h) or (b, h, query)
    if (threadIdx.x >= 32 || index >= rows) return;
    float sum = 0;
    for (int p = 0; p < packs; ++p) sum += partial[threadIdx.x * packs + p];
    int b = (int)(index / ((long long)nq * heads)), within = (int)(index % ((long long)nq * heads));
    long long row = tokenMajor ? ((long long)b * heads + within % heads) * nq + within / heads : index;  // [B, H, Nq]
    delta[row] = sum;
    lseLog2[row] = lse_log2(lse[row]);
}

// dQ = scale · dS K: one CTA of 8 warps per (128-query tile, pair), looping over 64-key tiles of K and of the
// stored dSᵀ; each warp owns 16 queries. The loop has little to compute per tile and waits on memory, so it keeps
// DQS_STAGES − 1 tiles in flight (a ring of DQS_STAGES buffers) rather than one.
#define DQS_QUERIES 128
#define DQS_KEYS 64
#define DQS_THREADS 256
#define DQS_STAGES 3

template <int D>
__device__ inline void flash_backward_dq_scores(const u16* k, const u16* dsT, u16* dq, Strides ks, Strides dqs,
                                                int nq, int nk, int dh, int heads, float scale, int dsColumns,
                                                int vectors) {
    constexpr int S = D + 8, SS = DQS_QUERIES + 8, BM = DQS_QUERIES, BN = DQS_KEYS;
    extern __shared__ __align__(16) u16 shared[];
    u16* buffers = shared;  // DQS_STAGES buffers: a BN-row K tile, then a BN × BM dSᵀ tile
    constexpr int bufferElements = BN * S + BN * SS;
    int pair = blockIdx.y, b = pair / heads, h = pair % heads, row0 = blockIdx.x * BM;
    int warp = threadIdx.x >> 5;
    const u16* kBase = slice(k, ks, b, h);
    int keysPadded = (nk + BN - 1) / BN * BN, tiles = keysPadded / BN;
    const u16* scores = dsT + (long long)pair * keysPadded * dsColumns + row0;
    // Tile t's copies; every call site commits one group, empty past the last tile, so that the group count
    // tells which tiles have landed.
    auto loadKeys = [&](int tile) {
        if (tile >= tiles) return;
        u16* target = buffers + (tile % DQS_STAGES) * bufferElements;
        load_tile<BN, D, DQS_THREADS>(target, kBase, ks.row, tile * BN, nk, dh, vectors);
        load_tile<BN, BM, DQS_THREADS>(target + BN * S, scores + (long long)tile * BN * dsColumns, dsColumns, 0, BN,
                                       BM, true);
    };
    for (int tile = 0; tile < DQS_STAGES - 1; ++tile) { loadKeys(tile); commit_copies(); }
    float dqAcc[D / 8][4] = {};
    for (int tile = 0; tile < tiles; ++tile) {
        wait_copies<DQS_STAGES - 2>();  // this thread's copies of tile t have landed
        __syncthreads();                // everyone's have, and tile t − 1's buffer is free again
        loadKeys(tile + DQS_STAGES - 1);
        commit_copies();
        const u16* kTile = buffers + (tile % DQS_STAGES) * bufferElements;
        const u16* sTile = kTile + BN * S;
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            u32 aFragment[4];
            load_a_transposed<SS>(aFragment, sTile, warp * 16, kk * 16);
#pragma unroll
            for (int n2 = 0; n2 < D / 16; ++n2) {
                u32 bFragment[4];
                load_b_transposed<S>(bFragment, kTile, kk * 16, n2 * 16);
                mma(dqAcc[2 * n2], aFragment, bFragment);
                mma(dqAcc[2 * n2 + 1], aFragment, bFragment + 2);
            }
        }
    }
    const float scales[2] = {scale, scale};
    store_rows<D>(slice(dq, dqs, b, h), dqs.row, row0 + warp * 16, nq, dh, dqAcc, scales, vectors);
}

// MARK: dK/dV on Hopper's warpgroup products (sm_90a)
//
// flash_backward_dkv's computation with wgmma instead of mma.sync: the CTA's four warps are one warpgroup that owns
// 64 keys. Sᵀ = K Qᵀ and dPᵀ = V dOᵀ multiply shared tiles (m64n{BM}k16); dV += Pᵀ dO and dK += dSᵀ Q take Pᵀ and
// dSᵀ from registers (m64n{D}k16). The accumulators lie as mma.sync's C tiles did (warp w: keys 16 w + g, + 8), so
// the softmax, the stored dSᵀ and the epilogue are the same code as there.
//
// Opt-in (CUDABackend.usesHopperAttention): at DiT-XL/2's shapes it is slower than flash_backward_dkv (0.34 against
// 0.26 ms). Its products alone take 0.19 ms; the tile loads by cp.async add about 0.10 and the softmax with the dSᵀ
// stores about 0.09 (BENCHMARKS.md, thirteenth session; neither running products a tile ahead nor K and V in
// registers helped). What it lacks is FlashAttention-3's: TMA loads shared by two consumer warpgroups, and dSᵀ
// stored through shared memory in whole sectors.
//
// Tiles lie in shared memory as wgmma's unswizzled core matrices (8 rows × 8 columns, 128 contiguous bytes), column
// group after column group: element (r, c) of a ROWS-row tile at ((c / 8) · ROWS + r) · 8 + c % 8. The same Q or dO
// tile is then a K-major operand (N = queries, K = head dim: Sᵀ = K Qᵀ) and an N-major one (N = head dim, K =
// queries: dK += dSᵀ Q), each 8 × 8 block read as one 128-byte line, without bank conflicts.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

#define HOPPER_DKV_QUERIES 32

// Rows row0.. of a [rows, dh] matrix into a core-matrix tile, zeros past rows and dh: one cp.async per 16 bytes.
// A warp takes 8 rows × 4 column groups at a time: in global memory, 64 contiguous bytes of each row (two whole
// sectors); in shared memory, four runs of 128 contiguous bytes (8 rows of one group), one per 8 threads, without
// bank conflicts. Needs dh % 8 == 0 and 16-byte aligned rows.
template <int ROWS, int D>
__device__ inline void load_core_tile(u16* tile, const u16* source, long long stride, int row0, int rows, int dh) {
    constexpr int GROUPS = D / 8, QUADS = (GROUPS + 3) / 4;
    for (int c = threadIdx.x; c < ROWS * QUADS * 4; c += FLASH_THREADS) {
        int block = c / 32, r = block % (ROWS / 8) * 8 + c % 8, group = block / (ROWS / 8) * 4 + c % 32 / 8;
        if (group >= GROUPS) continue;
        int row = row0 + r, column = group * 8;
        u16* target = tile + (group * ROWS + r) * 8;
        if (row < rows && column < dh) copy_async16(target, source + row * stride + column);
        else *(uint4*)target = make_uint4(0, 0, 0, 0);
    }
}

// Descriptors of the 16-wide K step kk of a ROWS-row core-matrix tile at shared address `tile`: as a K-major operand
// (its rows are M or N, its columns K: core matrices 128 bytes apart along the rows, ROWS · 16 along K), or an
// N-major one (its rows are K, its columns N: 128 bytes apart along K, ROWS · 16 along N).
template <int ROWS> __device__ inline u64 k_major_step(u32 tile, int kk) {
    return core_matrix_descriptor(tile + kk * ROWS * 32, ROWS * 16, 128);
}
template <int ROWS> __device__ inline u64 n_major_step(u32 tile, int kk) {
    return core_matrix_descriptor(tile + kk * 256, 128, ROWS * 16);
}

template <int D, bool SCORES>
__device__ inline void flash_backward_dkv_hopper(const u16* q, const u16* k, const u16* v, const u16* dO,
                                                 const float* lseLog2, const float* delta, const int* mask, u16* dk,
                                                 u16* dv, Strides qs, Strides ks, Strides vs, Strides gs, Strides dks,
                                                 Strides dvs, int nq, int nk, int dh, int heads, float scale,
                                                 float scaleLog2, u16* dsT, int dsColumns) {
    constexpr int BN = DKV_KEYS, BM = HOPPER_DKV_QUERIES;
    extern __shared__ __align__(128) u16 shared[];
    u16* kTile = shared;
    u16* vTile = kTile + BN * D;
    u16* buffers = vTile + BN * D;                     // two query buffers: Q then dO, BM rows each
    float* lseTiles = (float*)(buffers + 4 * BM * D);  // [2][BM]
    float* deltaTiles = lseTiles + 2 * BM;             // [2][BM]
    int pair = blockIdx.y, b = pair / heads, h = pair % heads, key0 = blockIdx.x * BN;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const u16* qBase = slice(q, qs, b, h);
    const u16* gBase = slice(dO, gs, b, h);
    load_core_tile<BN, D>(kTile, slice(k, ks, b, h), ks.row, key0, nk, dh);
    load_core_tile<BN, D>(vTile, slice(v, vs, b, h), vs.row, key0, nk, dh);
    auto loadQueries = [&](int tile, int buffer) {
        u16* target = buffers + buffer * 2 * BM * D;
        load_core_tile<BM, D>(target, qBase, qs.row, tile * BM, nq, dh);
        load_core_tile<BM, D>(target + BM * D, gBase, gs.row, tile * BM, nq, dh);
        load_query_statistics<BM>(lseTiles + buffer * BM, deltaTiles + buffer * BM, lseLog2, delta, pair, tile * BM,
                                  nq);
        commit_copies();
    };
    loadQueries(0, 0);
    float bias[2];
    for (int half = 0; half < 2; ++half) bias[half] = key_bias(mask, b, nk, key0 + warp * 16 + (lane >> 2) + 8 * half);
    const u32 kAddress = shared_address(kTile), vAddress = shared_address(vTile);

    float dkAcc[D / 8][4] = {}, dvAcc[D / 8][4] = {};
    for (int tile = 0, tiles = (nq + BM - 1) / BM; tile < tiles; ++tile) {
        // Tile t has landed for every thread, and the tensor cores (the async proxy) see what the copies and the
        // zero fills wrote.
        wait_copies<0>();
        fence_async_shared();
        __syncthreads();
        const int buffer = tile & 1;
        const u32 qAddress = shared_address(buffers + buffer * 2 * BM * D), gAddress = qAddress + BM * D * 2;
        float s[BM / 8][4], dp[BM / 8][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk)
            Wgmma<BM>::shared<0>(&s[0][0], k_major_step<BN>(kAddress, kk), k_major_step<BM>(qAddress, kk), kk);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk)
            Wgmma<BM>::shared<0>(&dp[0][0], k_major_step<BN>(vAddress, kk), k_major_step<BM>(gAddress, kk), kk);
        wgmma_commit();
        wgmma_wait<0>();
        // Every warp is done with the other buffer (tile t − 1's products waited at its end): fill it.
        if (tile + 1 < tiles) loadQueries(tile + 1, buffer ^ 1);

        transposed_score_gradients<BM>(s, dp, bias, lseTiles + buffer * BM, deltaTiles + buffer * BM, scaleLog2);
        if (SCORES) store_transposed_score_gradients<BM, BN>(dsT, dp, pair, key0 + warp * 16, tile * BM, dsColumns);
        u32 pFragments[BM / 16][4], dsFragments[BM / 16][4];
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk) {
            accumulator_to_a(pFragments[kk], s[2 * kk], s[2 * kk + 1]);
            accumulator_to_a(dsFragments[kk], dp[2 * kk], dp[2 * kk + 1]);
        }
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk) {
            Wgmma<D>::template registers<1>(&dvAcc[0][0], pFragments[kk], n_major_step<BM>(gAddress, kk), 1);
            Wgmma<D>::template registers<1>(&dkAcc[0][0], dsFragments[kk], n_major_step<BM>(qAddress, kk), 1);
        }
        wgmma_commit();
        // Waited here, not under the next tile's products: ptxas serializes products whose registers an instruction
        // writes while they are in flight (C7513/C7515), which a tile ahead would do here.
        wgmma_wait<0>();
    }
    const float one[2] = {1, 1}, scales[2] = {scale, scale};
    store_rows<D>(slice(dv, dvs, b, h), dvs.row, key0 + warp * 16, nk, dh, dvAcc, one, true);
    store_rows<D>(slice(dk, dks, b, h), dks.row, key0 + warp * 16, nk, dh, dkAcc, scales, true);
}

#define HOPPER_FLASH_KERNELS(D)                                                                                      \
    extern "C" __global__ void __launch_bounds__(FLASH_THREADS) flash_backward_dkv_hopper_##D(                       \
        const u16* q, const u16* k, const u16* v, const u16* dO, const float* lseLog2, const float* delta,           \
        const int* mask, u16* dk, u16* dv, Strides qs, Strides ks, Strides vs, Strides gs, Strides dks, Strides dvs, \
        int nq, int nk, int dh, int heads, float scale, float scaleLog2, u16* dsT, int dsColumns) {                  \
        GRID_DEPENDENCY();                                                                                           \
        if (dsT) flash_backward_dkv_hopper<D, true>(q, k, v, dO, lseLog2, delta, mask, dk, dv, qs, ks, vs, gs, dks, \
                                                    dvs, nq, nk, dh, heads, scale, scaleLog2, dsT, dsColumns);      \
        else flash_backward_dkv_hopper<D, false>(q, k, v, dO, lseLog2, delta, mask, dk, dv, qs, ks, vs, gs, dks,    \
                                                 dvs, nq, nk, dh, heads, scale, scaleLog2, nullptr, 0);             \
    }

HOPPER_FLASH_KERNELS(64)
HOPPER_FLASH_KERNELS(80)
HOPPER_FLASH_KERNELS(96)
HOPPER_FLASH_KERNELS(128)

#endif

// Forward CTAs an SM should hold (registers capped to fit): 2 at D = 80 (DiT-XL/2's 72), where that costs no
// spills; the others spill at 2.
#define FORWARD_BLOCKS(D) ((D) == 80 ? 2 : 1)
// dQ CTAs an SM should hold: 4 at D = 80 (128 registers, 4 bytes of spills), which the H100's own NVRTC would
// otherwise give 164 registers and 3 CTAs an SM (DiT-XL/2 step: 6.76–6.84 → 6.17–6.27 ms). dK/dV keeps no bound:
// capped for 3 CTAs it took 163 registers and 7.7 ms instead of 159 and 7.2–7.3 ms; for 4 it spills 192 bytes.
#define DQ_BLOCKS(D) ((D) == 80 ? 4 : 1)

// One entry point per padded head dim (the host picks the smallest D ≥ Dh).
#define FLASH_KERNELS(D)                                                                                             \
    extern "C" __global__ void __launch_bounds__(FORWARD_THREADS, FORWARD_BLOCKS(D)) flash_forward_##D(              \
        const u16* q, const u16* k, const u16* v, const int* mask, u16* o, float* lse, Strides qs, Strides ks,       \
        Strides vs, Strides os, int nq, int nk, int dh, int heads, float scaleLog2, int vectors) {                   \
        GRID_DEPENDENCY();                                                                                           \
        flash_forward<D>(q, k, v, mask, o, lse, qs, ks, vs, os, nq, nk, dh, heads, scaleLog2, vectors);              \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(FLASH_THREADS, DQ_BLOCKS(D)) flash_backward_dq_##D(                 \
        const u16* q, const u16* k, const u16* v, const u16* o, const u16* dO, const float* lse, const int* mask,    \
        u16* dq, float* delta, float* lseLog2, Strides qs, Strides ks, Strides vs, Strides os, Strides gs,           \
        Strides dqs, int nq, int nk, int dh, int heads, float scale, float scaleLog2, int vectors) {                 \
        GRID_DEPENDENCY();                                                                                           \
        flash_backward_dq<D>(q, k, v, o, dO, lse, mask, dq, delta, lseLog2, qs, ks, vs, os, gs, dqs, nq, nk, dh,    \
                             heads, scale, scaleLog2, vectors);                                                      \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(FLASH_THREADS) flash_backward_dkv_##D(                              \
        const u16* q, const u16* k, const u16* v, const u16* dO, const float* lseLog2, const float* delta,           \
        const int* mask, u16* dk, u16* dv, Strides qs, Strides ks, Strides vs, Strides gs, Strides dks, Strides dvs, \
        int nq, int nk, int dh, int heads, float scale, float scaleLog2, int vectors) {                              \
        GRID_DEPENDENCY();                                                                                           \
        flash_backward_dkv<D, false>(q, k, v, dO, lseLog2, delta, mask, dk, dv, qs, ks, vs, gs, dks, dvs, nq, nk,   \
                                     dh, heads, scale, scaleLog2, vectors, nullptr, 0);                              \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(FLASH_THREADS) flash_backward_dkv_scores_##D(                       \
        const u16* q, const u16* k, const u16* v, const u16* dO, const float* lseLog2, const float* delta,           \
        const int* mask, u16* dk, u16* dv, Strides qs, Strides ks, Strides vs, Strides gs, Strides dks, Strides dvs, \
        int nq, int nk, int dh, int heads, float scale, float scaleLog2, int vectors, u16* dsT, int dsColumns) {     \
        GRID_DEPENDENCY();                                                                                           \
        flash_backward_dkv<D, true>(q, k, v, dO, lseLog2, delta, mask, dk, dv, qs, ks, vs, gs, dks, dvs, nq, nk,    \
                                    dh, heads, scale, scaleLog2, vectors, dsT, dsColumns);                           \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(DQS_THREADS) flash_backward_dq_scores_##D(                        \
        const u16* k, const u16* dsT, u16* dq, Strides ks, Strides dqs, int nq, int nk, int dh, int heads,           \
        float scale, int dsColumns, int vectors) {                                                                   \
        GRID_DEPENDENCY();                                                                                           \
        flash_backward_dq_scores<D>(k, dsT, dq, ks, dqs, nq, nk, dh, heads, scale, dsColumns, vectors);             \
    }

FLASH_KERNELS(64)
FLASH_KERNELS(80)
FLASH_KERNELS(96)
FLASH_KERNELS(128)
