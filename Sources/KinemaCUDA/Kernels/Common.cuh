// Prepended by CUDABackend to every kernel file before NVRTC compiles it: what all kernels share.

// Grid-stride loop: any launch size covers any n.
#define GRID_LOOP(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
                             i += (long long)blockDim.x * gridDim.x)

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// bf16 / f16 bit patterns and their conversions. Round to nearest even, as Kinema's host conversion does (NaN stays
// a quiet NaN).
__device__ inline u16 f32_to_bf16(float x) {
    u32 bits = __float_as_uint(x);
    if (x != x) return (u16)((bits >> 16) | 0x40);
    return (u16)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}
__device__ inline float bf16_to_f32(u16 x) { return __uint_as_float(((u32)x) << 16); }
__device__ inline u16 f32_to_f16(float x) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x)); return h; }
__device__ inline float f16_to_f32(u16 h) { float x; asm("cvt.f32.f16 %0, %1;" : "=f"(x) : "h"(h)); return x; }

// The element type of activations. A kernel file is compiled once per element type it is launched with
// (-DELEMENT_BF16 for bf16, f32 otherwise), so one kernel body serves both precisions: kernels load with
// `ld(p, i)` (to f32), compute in f32 and store with `st(p, i, v)` (rounded to nearest even for bf16). Statistics,
// gradients of parameters and reductions stay f32 (or f64) whatever the element type.
struct __align__(2) bf16 { u16 bits; };
#ifdef ELEMENT_BF16
typedef bf16 T;
#else
typedef float T;
#endif
__device__ inline float ld(const float* p, long long i) { return p[i]; }
__device__ inline float ld(const bf16* p, long long i) { return bf16_to_f32(p[i].bits); }
__device__ inline void st(float* p, long long i, float v) { p[i] = v; }
__device__ inline void st(bf16* p, long long i, float v) { p[i].bits = f32_to_bf16(v); }
// v as a tensor of T holds it: rounded to bf16 for bf16 activations, unchanged for f32. A kernel that goes on
// computing from a value it also stores uses this, so it computes from what was stored.
__device__ inline float rounded(float v) { T t; st(&t, 0, v); return ld(&t, 0); }

// Eight consecutive elements through one 16-byte (bf16) or two 16-byte (f32) accesses: the memory-bound kernels
// walk rows in such packs, so each thread has its loads in flight together. `i` must be a multiple of 8 and the
// base 16-byte aligned.
__device__ inline void ld8(const float* p, long long i, float* v) {
    float4 a = *(const float4*)(p + i), b = *(const float4*)(p + i + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ inline void ld8(const bf16* p, long long i, float* v) {
    uint4 a = *(const uint4*)(p + i);
    u32 w[4] = {a.x, a.y, a.z, a.w};
    #pragma unroll
    for (int k = 0; k < 4; ++k) { v[2 * k] = __uint_as_float(w[k] << 16); v[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u); }
}
__device__ inline void st8(float* p, long long i, const float* v) {
    *(float4*)(p + i) = make_float4(v[0], v[1], v[2], v[3]);
    *(float4*)(p + i + 4) = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ inline void st8(bf16* p, long long i, const float* v) {
    u32 w[4];
    #pragma unroll
    for (int k = 0; k < 4; ++k) w[k] = (u32)f32_to_bf16(v[2 * k]) | ((u32)f32_to_bf16(v[2 * k + 1]) << 16);
    *(uint4*)(p + i) = make_uint4(w[0], w[1], w[2], w[3]);
}

// Sums `total` over a 256-thread block with a fixed tree and writes it to partial[blockIdx.x]: the same partial
// sums on every run (the host then adds the partials in order).
__device__ inline void block_reduce_store(double total, double* partial) {
    __shared__ double shared[256];
    shared[threadIdx.x] = total;
    __syncthreads();
    for (int stride = 128; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

// One block per row: rows walked with a block-stride loop.
#define BLOCK_LOOP(row, rows) for (long long row = blockIdx.x; row < (rows); row += gridDim.x)

#define MAX_THREADS 256

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
