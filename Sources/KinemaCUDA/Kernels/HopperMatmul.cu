// MARK: Matrix products of our own on Hopper (sm_90a): TMA, mbarriers and wgmma, persistent and warp-specialised
//
// C[M, N] = A[M, K] · B with bf16 operands, f32 accumulation and a bf16 output, for the products of a linear layer,
// with what cuBLASLt's epilogues do fused (bias, GELU keeping its input, × GELU′) and one thing they cannot: the
// input gradient dy W also sums dy's columns (the layer's bias gradient) from the tiles it has in shared memory
// anyway. A is row-major (K contiguous: activations). B is either [N, K] (K contiguous: a weight in the forward,
// x Wᵀ) or [K, N] (N contiguous: the same weight in the input gradient, dy W); the tensor cores read both layouts
// from shared memory (wgmma's transpose bit), so neither is copied.
//
// A CTA of three warpgroups owns one SM; CTAs run in clusters of two that take vertically adjacent output tiles of
// BM × BN = 128 × 192 (N fastest, so the clusters working at the same time share A's rows in L2), persistently:
// the cluster's first tile pair, then every grid's worth on. Warpgroup 0 is the producer: one thread issues the TMA
// copies of A[128 × 64] and its half of B[192 × 64] for each K step into a ring of 4 stages; the TMA multicasts each
// half of B to both CTAs, so L2 serves 28 KiB a K step and CTA instead of 40. A stage has a `full` barrier (its
// 40 KiB have landed) and an `empty` one (the consumers of both CTAs, which both read it, are done with it).
// Warpgroups 1 and 2 are the consumers: each multiplies its 64 rows of the tile by all 192 columns (wgmma
// m64n192k16, four per K step), one K step's products kept in flight, while the producer runs ahead into the next
// tile.
//
// The epilogue goes through shared memory: each consumer writes its 64 × 192 results (bias added, GELU or × GELU′
// applied) as three 64 × 64 boxes in the 128-byte swizzled layout (no bank conflicts), and one thread hands them to
// a TMA store, which runs during the consumer's next tile: the buffer is written again only in that tile's epilogue,
// after its products. The GELU epilogues' elementwise work is done by helper warps (below) while the consumers go on:
// the GELU forward's consumers write z = sum + bias and hand the buffer over; the dGELU's aux tile comes into the
// buffer by TMA a quarter of the way through the main loop, the helpers turn it into GELU′ slopes, and each consumer
// thread writes its results over its slopes. The bias tile waits in shared memory from the tile's start.
//
// Tails are free: TMA reads zeros past the tensor's edges and stores only inside it. The host requires K and N to be
// multiples of 8 (TMA's 16-byte row strides) and 16-byte aligned bases; other shapes go to cuBLASLt.

#if defined(ELEMENT_BF16) && defined(__CUDA_ARCH_FEAT_SM90_ALL)

#define GEMM_BM 128
#define GEMM_BN 192
#define GEMM_BK 64
#define GEMM_A_BYTES (GEMM_BM * GEMM_BK * 2)
#define GEMM_B_BYTES (GEMM_BN * GEMM_BK * 2)
#define GEMM_STAGE_BYTES (GEMM_A_BYTES + GEMM_B_BYTES)
#define GEMM_STAGES 4
#define GEMM_OUT_BYTES (64 * GEMM_BN * 2)  // one consumer's 64 × 192 bf16 results: three 64 × 64 boxes

// What the epilogue does with a tile's f32 sums before the bf16 store (CUDABackend+HopperMatmul's Epilogue).
#define EPILOGUE_NONE 0
#define EPILOGUE_BIAS 1       // + bias[n]
#define EPILOGUE_GELU_AUX 2   // z = sum + bias[n]: aux = z, out = GELU(z)
#define EPILOGUE_DGELU 3      // out = sum · GELU′(aux)

// GELU (tanh approximation) and its derivative, with u = √(2/π)(v + 0.044715 v³) and t = tanh u from the hardware's
// tanh (relative error 2⁻¹¹, far below the bf16 output's rounding): GELU = v (1 + t) / 2, the same function as
// the CPU's v σ(2u) at one special-function op an element instead of two.
__device__ inline float tanh_approx(float x) { float y; asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ inline float gelu_tanh(float v) {
    float t = tanh_approx(0.7978845608f * v * (1.0f + 0.044715f * v * v));
    return 0.5f * v * (1.0f + t);
}
__device__ inline float gelu_tanh_slope(float v) {
    float t = tanh_approx(0.7978845608f * v * (1.0f + 0.044715f * v * v));
    return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * 0.7978845608f * (1.0f + 3.0f * 0.044715f * v * v);
}
__device__ inline u32 pack_bf16x2(float low, float high) {
    u32 w;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(w) : "f"(high), "f"(low));
    return w;
}
__device__ inline float2 unpack_bf16x2(u32 w) { return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xFFFF0000u)); }

// Where element (row, column) of a 128-byte swizzled tile of 64-element rows lies, from the tile's start: the
// 16-byte chunks of row r are permuted by r % 8 (what TMA reads and writes with SWIZZLE_128B). An output buffer is
// three such 64 × 64 boxes side by side.
__device__ inline u32 swizzled_offset(int row, int column) {
    return row * 128 + ((((column % 64) / 8) ^ (row % 8)) << 4) + (column % 8) * 2;
}
__device__ inline u32 output_offset(int row, int column) { return (column / 64) * 8192 + swizzled_offset(row, column); }

// The column sums of a consumer's 64 rows of the A tile of one K step (its 64 columns), as four partial rows of 16
// rows each (one a warp): thread t adds 8 columns (one 16-byte chunk, t % 8) of 4 rows (t / 8 + 16 i), the warp's
// four row groups meet by shuffles, and lanes 0 … 7 store. Run while the step's wgmma work in the background.
__device__ inline void sum_a_columns(u32 a, float* partials, long long partialRow, int K, int k0) {
    int t = threadIdx.x % 128, chunk = t % 8;
    float s[8] = {};
    #pragma unroll
    for (int i = 0; i < 4; ++i) {
        int row = t / 8 + 16 * i;
        u32 w[4];
        asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3]) : "r"(a + swizzled_offset(row, 8 * chunk)));
        #pragma unroll
        for (int q = 0; q < 4; ++q) { float2 v = unpack_bf16x2(w[q]); s[2 * q] += v.x; s[2 * q + 1] += v.y; }
    }
    #pragma unroll
    for (int q = 0; q < 8; ++q) {
        s[q] += __shfl_xor_sync(0xffffffffu, s[q], 8);
        s[q] += __shfl_xor_sync(0xffffffffu, s[q], 16);
    }
    int column = k0 + 8 * chunk;
    if (t % 32 < 8 && column < K) {
        float4* out = (float4*)(partials + (partialRow + t / 32) * K + column);
        out[0] = make_float4(s[0], s[1], s[2], s[3]);
        out[1] = make_float4(s[4], s[5], s[6], s[7]);
    }
}

// A consumer's results into its output buffer: the sums (the bias added) as they are (OP EPILOGUE_NONE), or times
// the GELU′ slopes the helper warps left in the buffer, each element over its slope (EPILOGUE_DGELU). The slopes
// are read six columns of pairs at a time before any is written over: each shared load and store is an ordered asm
// statement, so one at a time they would wait out a load's latency per pair.
template <int OP> __device__ inline void write_outputs(const float* d, u32 output) {
    int t = threadIdx.x % 128, rowIn = (t / 32) * 16 + (t % 32) / 4;
    #pragma unroll
    for (int j0 = 0; j0 < 24; j0 += 6) {
        u32 at[12], z[12];
        #pragma unroll
        for (int i = 0; i < 12; ++i) {
            at[i] = output + output_offset(rowIn + 8 * (i % 2), 8 * (j0 + i / 2) + 2 * (t % 4));
            if (OP == EPILOGUE_DGELU) asm volatile("ld.shared.u32 %0, [%1];" : "=r"(z[i]) : "r"(at[i]));
        }
        #pragma unroll
        for (int i = 0; i < 12; ++i) {
            int e = 4 * (j0 + i / 2) + 2 * (i % 2);  // d[e], d[e + 1]: columns 8 j + 2 (t % 4) + 0, 1 of row half i % 2
            float x = d[e], y = d[e + 1];
            if (OP == EPILOGUE_DGELU) {
                float2 slope = unpack_bf16x2(z[i]);
                x *= slope.x;
                y *= slope.y;
            }
            asm volatile("st.shared.u32 [%0], %1;" ::"r"(at[i]), "r"(pack_bf16x2(x, y)));
        }
    }
}

// MARK: Helper warps: the GELU epilogues' elementwise work, off the consumers' path
//
// Warps 1–3 of the producer warpgroup (its warp 0 issues the TMA copies) take the work of the GELU epilogues that
// needs no accumulator, while the consumers go on with their next tile's products.
// - Forward: once a consumer has written z = sum + bias (bf16) into its buffer, they store z (the aux output), turn
//   the buffer into GELU(z) in place (the GELU of z as stored, the kept input itself, not of the f32 sum) and store
//   that.
// - dGELU input gradient: once the aux tile has come into a consumer's buffer, a quarter of the way through its main
//   loop, they turn it into GELU′(aux) in place (rounded to bf16), and the consumer's epilogue is a product by it.
// Both are elementwise, so the helpers walk the buffer as 16-byte words whatever its swizzle. fc1's forward with GELU
// went 0.288 → 0.278 ms, below cuBLASLt's 0.285; the dGELU's 0.320 did not move (BENCHMARKS.md, eleventh session).
#define HELPER_THREADS 96

__device__ inline void helpers_sync() { asm volatile("bar.sync 3, %0;" ::"n"(HELPER_THREADS) : "memory"); }

// f(v) for every element of a consumer's 64 × 192 buffer, in place.
template <typename F> __device__ inline void helpers_transform(u32 buffer, F f) {
    for (int word = threadIdx.x - 32; word < GEMM_OUT_BYTES / 16; word += HELPER_THREADS) {
        u32 at = buffer + 16 * word, w[4];
        asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3]) : "r"(at));
        #pragma unroll
        for (int q = 0; q < 4; ++q) { float2 v = unpack_bf16x2(w[q]); w[q] = pack_bf16x2(f(v.x), f(v.y)); }
        asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(at), "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3]) : "memory");
    }
}

// One consumer's 64 × 192 buffer (three 64 × 64 boxes) into the tensor at (row0, n0): one bulk group.
__device__ inline void store_tile(const TensorMap* map, u32 output, int n0, int row0) {
    for (int p = 0; p < 3; ++p) tma_store(map, output + p * 8192, n0 + 64 * p, row0);
    tma_store_commit();
}

// Hands a consumer's output buffer to the TMA store, after every thread's writes are visible to it. The store
// runs on while the consumer goes on; the buffer is written again only after the next tile's products, once
// tma_store_wait_read says the store has read it.
__device__ inline void store_outputs(const TensorMap* map, u32 output, int consumer, int n0, int row0) {
    fence_async_shared();
    warpgroup_sync(1 + consumer);
    if (threadIdx.x % 128 == 0) {
        store_tile(map, output, n0, row0);
    }
}

// The origin of this CTA's half of a cluster tile: pair of row tiles tile / nTiles, column tile (tile + that pair)
// % nTiles. The skew spreads the first column (whose tiles also sum A's columns) over all clusters: without it a
// grid of 66 clusters and 6 column tiles gives every first-column tile to the same 11 clusters.
__device__ inline void tile_origin(long long tile, int nTiles, u32 rank, int& m0, int& n0) {
    long long pair = tile / nTiles;
    m0 = (int)(pair * 2 + rank) * GEMM_BM;
    n0 = (int)((tile + pair) % nTiles) * GEMM_BN;
}

template <int TRANSPOSE_B, int EPILOGUE>
__device__ inline void hopper_matmul(const TensorMap* mapA, const TensorMap* mapB, const TensorMap* mapC,
                                     const TensorMap* mapAux, const bf16* __restrict__ bias,
                                     float* __restrict__ partials, long long M, int N, int K) {
    extern __shared__ unsigned char dynamic[];
    // 128-byte swizzling repeats every 1024 bytes: the stages and output buffers start on such boundaries.
    u32 base = (shared_address(dynamic) + 1023) & ~1023u;
    u32 outputs = base + GEMM_STAGES * GEMM_STAGE_BYTES;
    // Barriers: full[s] at bars + 8 s, empty[s] at bars + 8 (GEMM_STAGES + s), then for consumer c: its aux tile
    // has landed at bars + 8 (2 GEMM_STAGES + c), its buffer holds z (forward) or GELU′ (input gradient) for the
    // helpers or from them at bars + 8 (2 GEMM_STAGES + 2 + c), the helpers' stores have read its buffer at
    // bars + 8 (2 GEMM_STAGES + 4 + c); from bars + 128 the consumers' bias tiles (192 bf16 each).
    u32 bars = outputs + 2 * GEMM_OUT_BYTES;
    int warpgroup = threadIdx.x / 128, t = threadIdx.x % 128;
    u32 rank = cluster_rank();
    if (threadIdx.x == 0) {
        for (int s = 0; s < GEMM_STAGES; ++s) {
            barrier_init(bars + 8 * s, 1);
            barrier_init(bars + 8 * (GEMM_STAGES + s), 4);  // two consumers in each of the two CTAs
        }
        for (int i = 0; i < 6; ++i) barrier_init(bars + 8 * (2 * GEMM_STAGES + i), 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    // Every barrier of the cluster is initialised before any CTA multicasts into another or arrives on its barriers.
    cluster_sync();
    int nTiles = (N + GEMM_BN - 1) / GEMM_BN, kSteps = (K + GEMM_BK - 1) / GEMM_BK;
    // A cluster's tile is 2 · 128 rows by 192 columns: this CTA takes the upper or the lower half.
    long long tiles = ((M + 2 * GEMM_BM - 1) / (2 * GEMM_BM)) * nTiles;
    int stage = 0;
    u32 parity = 0;
    if (warpgroup == 0) {
        if (t == 0) {
            for (long long tile = blockIdx.x / 2; tile < tiles; tile += gridDim.x / 2) {
                int m0, n0;
                tile_origin(tile, nTiles, rank, m0, n0);
                for (int k = 0; k < kSteps; ++k) {
                    u32 full = bars + 8 * stage, empty = bars + 8 * (GEMM_STAGES + stage);
                    u32 a = base + stage * GEMM_STAGE_BYTES, b = a + GEMM_A_BYTES;
                    barrier_wait(empty, parity ^ 1);
                    barrier_expect_bytes(full, GEMM_STAGE_BYTES);
                    tma_load(a, mapA, full, k * GEMM_BK, m0);
                    // This CTA's half of B, into both: rows 96 r … of a K-major tile, or k rows 32 r … of each of
                    // the three 64-column boxes of an N-major one (boxes of 96 × 64 and 32 × 64).
                    if (TRANSPOSE_B) {
                        for (int p = 0; p < 3; ++p) {
                            tma_load_multicast(b + p * 8192 + rank * 4096, mapB, full, n0 + 64 * p, k * GEMM_BK + 32 * rank, 3);
                        }
                    } else {
                        tma_load_multicast(b + rank * 96 * 128, mapB, full, k * GEMM_BK, n0 + 96 * rank, 3);
                    }
                    if (++stage == GEMM_STAGES) { stage = 0; parity ^= 1; }
                }
            }
        } else if (t >= 32 && (EPILOGUE == EPILOGUE_GELU_AUX || EPILOGUE == EPILOGUE_DGELU)) {
            bool lead = t == 32;
            u32 phase = 0;
            for (long long tile = blockIdx.x / 2; tile < tiles; tile += gridDim.x / 2) {
                int m0, n0;
                tile_origin(tile, nTiles, rank, m0, n0);
                for (int consumer = 0; consumer < 2; ++consumer) {
                    u32 output = outputs + consumer * GEMM_OUT_BYTES;
                    u32 handed = bars + 8 * (2 * GEMM_STAGES + 2 + consumer);
                    if (EPILOGUE == EPILOGUE_GELU_AUX) {
                        // z is in the buffer: out to the aux tensor, then GELU(z) in its place, out to C.
                        barrier_wait(handed, phase);
                        if (lead) {
                            store_tile(mapAux, output, n0, m0 + 64 * consumer);
                            tma_store_wait_read();
                        }
                        helpers_sync();
                        helpers_transform(output, [](float v) { return gelu_tanh(v); });
                        fence_async_shared();
                        helpers_sync();
                        if (lead) {
                            store_tile(mapC, output, n0, m0 + 64 * consumer);
                            tma_store_wait_read();
                            barrier_arrive(bars + 8 * (2 * GEMM_STAGES + 4 + consumer));
                        }
                    } else {
                        // The aux tile has landed: GELU′ of it in its place, for the consumer's epilogue.
                        barrier_wait(bars + 8 * (2 * GEMM_STAGES + consumer), phase);
                        helpers_transform(output, [](float v) { return gelu_tanh_slope(v); });
                        helpers_sync();
                        if (lead) barrier_arrive(handed);
                    }
                }
                phase ^= 1;
            }
            if (lead) tma_store_wait_all();
        }
    } else {
        int consumer = warpgroup - 1;
        u32 output = outputs + consumer * GEMM_OUT_BYTES, auxFull = bars + 8 * (2 * GEMM_STAGES + consumer);
        u32 handed = bars + 8 * (2 * GEMM_STAGES + 2 + consumer), released = bars + 8 * (2 * GEMM_STAGES + 4 + consumer);
        u32 phase = 0;
        float d[96];
        for (long long tile = blockIdx.x / 2; tile < tiles; tile += gridDim.x / 2) {
            int m0, n0;
            tile_origin(tile, nTiles, rank, m0, n0);
            int row0 = m0 + 64 * consumer;
            // A's column sums come from the CTAs of the first column of tiles, which see every row of A once.
            bool sumsA = partials != nullptr && n0 == 0;
            // This tile's 192 bias values into shared memory, read by the epilogue after the main loop.
            u32 biasAt = bars + 128 + consumer * GEMM_BN * 2;
            if ((EPILOGUE == EPILOGUE_BIAS || EPILOGUE == EPILOGUE_GELU_AUX) && t < GEMM_BN / 2) {
                int column = n0 + 2 * t;
                u32 pair = column < N ? __ldg((const unsigned*)(bias + column)) : 0u;
                asm volatile("st.shared.u32 [%0], %1;" ::"r"(biasAt + 4 * t), "r"(pair));
            }
            int previous = -1;
            for (int k = 0; k < kSteps; ++k) {
                barrier_wait(bars + 8 * stage, parity);
                u32 a = base + stage * GEMM_STAGE_BYTES + consumer * (64 * 128), b = base + stage * GEMM_STAGE_BYTES + GEMM_A_BYTES;
                wgmma_fence();
                #pragma unroll
                for (int kk = 0; kk < GEMM_BK / 16; ++kk) {
                    u64 da = matrix_descriptor(a + 32 * kk, 16, 1024);
                    u64 db = TRANSPOSE_B ? matrix_descriptor(b + 2048 * kk, 8192, 1024) : matrix_descriptor(b + 32 * kk, 16, 1024);
                    Wgmma<GEMM_BN>::shared<TRANSPOSE_B>(d, da, db, k > 0 || kk > 0);
                }
                wgmma_commit();
                // A quarter of the way through, the last tile's store has long read the buffer: the dGELU's aux
                // tile comes into it, and the helpers turn it into slopes, during the rest of the loop.
                if (EPILOGUE == EPILOGUE_DGELU && t == 0 && k == kSteps / 4) {
                    tma_store_wait_read();
                    barrier_expect_bytes(auxFull, GEMM_OUT_BYTES);
                    for (int p = 0; p < 3; ++p) tma_load(output + p * 8192, mapAux, auxFull, n0 + 64 * p, row0);
                }
                if (sumsA) sum_a_columns(a, partials, (m0 / GEMM_BM) * 8 + 4 * consumer, K, k * GEMM_BK);
                // One K step stays in flight: the one before it is done, so its stage goes back to the producers.
                wgmma_wait<1>();
                if (previous >= 0 && t == 0) for (u32 r = 0; r < 2; ++r) barrier_arrive_cluster(bars + 8 * (GEMM_STAGES + previous), r);
                previous = stage;
                if (++stage == GEMM_STAGES) { stage = 0; parity ^= 1; }
            }
            wgmma_wait<0>();
            if (previous >= 0 && t == 0) for (u32 r = 0; r < 2; ++r) barrier_arrive_cluster(bars + 8 * (GEMM_STAGES + previous), r);
            // The accumulators are final only after the wait: no reads of d may move above it.
            #pragma unroll
            for (int i = 0; i < 96; ++i) asm volatile("" : "+f"(d[i])::"memory");
            // The buffer is free again: the last tile's stores, which ran during this tile's products, have read
            // it (the dGELU's waited for that a quarter of the way, before its aux tile came in, and now waits for
            // the helpers' slopes in its place; the GELU's stores are the helpers').
            if (EPILOGUE == EPILOGUE_DGELU) barrier_wait(handed, phase);
            if (EPILOGUE == EPILOGUE_GELU_AUX) barrier_wait(released, phase ^ 1);
            phase ^= 1;
            if (EPILOGUE == EPILOGUE_BIAS || EPILOGUE == EPILOGUE_NONE) { if (t == 0) tma_store_wait_read(); }
            warpgroup_sync(1 + consumer);
            if (EPILOGUE == EPILOGUE_BIAS || EPILOGUE == EPILOGUE_GELU_AUX) {
                #pragma unroll
                for (int j = 0; j < 24; ++j) {
                    u32 pair;
                    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(pair) : "r"(biasAt + 4 * (4 * j + t % 4)));
                    float2 b = unpack_bf16x2(pair);
                    for (int half = 0; half < 2; ++half) { d[4 * j + 2 * half] += b.x; d[4 * j + 2 * half + 1] += b.y; }
                }
            }
            write_outputs<EPILOGUE == EPILOGUE_DGELU ? EPILOGUE_DGELU : EPILOGUE_NONE>(d, output);
            if (EPILOGUE == EPILOGUE_GELU_AUX) {
                // z goes to the helpers, which store it, apply the GELU and store again.
                fence_async_shared();
                warpgroup_sync(1 + consumer);
                if (t == 0) barrier_arrive(handed);
            } else {
                store_outputs(mapC, output, consumer, n0, row0);
            }
        }
        if (t == 0) tma_store_wait_all();
    }
    // No CTA leaves while its peer may still multicast into it or arrive on its barriers.
    cluster_sync();
}

#define HOPPER_MATMUL(NAME, TRANSPOSE_B, EPILOGUE)                                                               \
    extern "C" __global__ void __launch_bounds__(384, 1) __cluster_dims__(2, 1, 1)                                \
        NAME(const __grid_constant__ TensorMap mapA, const __grid_constant__ TensorMap mapB,                      \
             const __grid_constant__ TensorMap mapC, const __grid_constant__ TensorMap mapAux, const bf16* bias,  \
             float* partials, long long M, int N, int K) {                                                        \
        GRID_DEPENDENCY();                                                                                        \
        hopper_matmul<TRANSPOSE_B, EPILOGUE>(&mapA, &mapB, &mapC, &mapAux, bias, partials, M, N, K);              \
    }
// x Wᵀ (+ bias), GELU with its input kept; dy W, × GELU′(aux) (either with dy's column sums when given `partials`).
HOPPER_MATMUL(hopper_matmul_nt, 0, EPILOGUE_NONE)
HOPPER_MATMUL(hopper_matmul_nt_bias, 0, EPILOGUE_BIAS)
HOPPER_MATMUL(hopper_matmul_nt_gelu, 0, EPILOGUE_GELU_AUX)
HOPPER_MATMUL(hopper_matmul_nn, 1, EPILOGUE_NONE)
HOPPER_MATMUL(hopper_matmul_nn_dgelu, 1, EPILOGUE_DGELU)

#endif
