// Prepended by CUDABackend to every kernel file before NVRTC compiles it: what all kernels share.

// Grid-stride loop: any launch size covers any n.
#define GRID_LOOP(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
                             i += (long long)blockDim.x * gridDim.x)

// Programmatic dependent launch (sm_90): CUDABackend launches every kernel allowed to start while the kernel
// before it on the stream is still finishing its last blocks, hiding the gap between the two. So every kernel
// begins with GRID_DEPENDENCY() and touches no global memory before it: it lets the next kernel be launched (whose
// blocks then wait in their own GRID_DEPENDENCY), and waits until the kernel before has finished and its writes
// are visible. CUDAWithoutGPUTests checks that every kernel of Kernels/ begins with it.
#if __CUDA_ARCH__ >= 900
#define GRID_DEPENDENCY() asm volatile("griddepcontrol.launch_dependents;\n\tgriddepcontrol.wait;" ::: "memory")
#else
#define GRID_DEPENDENCY() do {} while (0)
#endif

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
// Eight consecutive elements as stored: one 16-byte vector of bf16, two of f32; the memory-bound kernels move rows
// in such packs, so each thread has its loads in flight together. pack8 rounds to T: to nearest even for bf16, by
// the hardware's paired conversion (one instruction per two elements, where f32_to_bf16 takes seven per element;
// the same bits except a NaN's payload), unpack8 widens to f32.
struct __align__(16) Pack8 {
#ifdef ELEMENT_BF16
    u32 w[4];  // elements 2k (low half) and 2k + 1 (high half)
#else
    float f[8];
#endif
};
__device__ inline void unpack8(Pack8 p, float* v) {
#ifdef ELEMENT_BF16
    #pragma unroll
    for (int k = 0; k < 4; ++k) { v[2 * k] = __uint_as_float(p.w[k] << 16); v[2 * k + 1] = __uint_as_float(p.w[k] & 0xFFFF0000u); }
#else
    #pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = p.f[k];
#endif
}
__device__ inline Pack8 pack8(const float* v) {
    Pack8 p;
#ifdef ELEMENT_BF16
    #pragma unroll
    for (int k = 0; k < 4; ++k) asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(p.w[k]) : "f"(v[2 * k + 1]), "f"(v[2 * k]));
#else
    #pragma unroll
    for (int k = 0; k < 8; ++k) p.f[k] = v[k];
#endif
    return p;
}

// Elements i … i + 7 of T data as f32 and back: `i` a multiple of 8, the base 16-byte aligned.
__device__ inline void ld8(const T* p, long long i, float* v) { unpack8(*(const Pack8*)(p + i), v); }
__device__ inline void st8(T* p, long long i, const float* v) { *(Pack8*)(p + i) = pack8(v); }

// The element-by-element ways of load_pack and store_pack, out of line: a kernel that holds many packs in registers
// does not pay registers for the path that rows in packs never take.
__device__ __noinline__ Pack8 load_pack_elements(const T* row, int j, int width) {
    float v[8];
    #pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = j + k < width ? ld(row, j + k) : 0.0f;
    return pack8(v);
}
__device__ __noinline__ void store_pack_elements(T* row, int j, int width, Pack8 p) {
    float v[8];
    unpack8(p, v);
    #pragma unroll
    for (int k = 0; k < 8; ++k) if (j + k < width) st(row, j + k, v[k]);
}
// Columns j … j + 7 of a row of `width` elements: one pack when `packed` (width a multiple of 8, every row 16-byte
// aligned), else element by element, with zeros past the row's end (and nothing stored there).
__device__ inline Pack8 load_pack(const T* row, int j, int width, bool packed) {
    return packed ? *(const Pack8*)(row + j) : load_pack_elements(row, j, width);
}
__device__ inline void store_pack(T* row, int j, int width, bool packed, Pack8 p) {
    if (packed) *(Pack8*)(row + j) = p;
    else store_pack_elements(row, j, width, p);
}

// The shared-state-space address of a pointer into shared memory (what ldmatrix, cp.async and wgmma take).
__device__ inline u32 shared_address(const void* p) { return (u32)__cvta_generic_to_shared(p); }

// Copies from device to shared memory that bypass registers (cp.async, sm_80+): a thread issues many 16-byte
// chunks at once and they land while it computes on earlier data. commit_copies() closes a group of the copies the
// thread has issued; wait_copies<N>() waits until at most the N newest groups are still in flight. Only the
// copies of the calling thread: others' need a barrier after their wait to be seen.
__device__ inline void copy_async16(void* target, const void* source) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(shared_address(target)), "l"(source));
}
__device__ inline void copy_async4(void* target, const void* source) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(shared_address(target)), "l"(source));
}
__device__ inline void commit_copies() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ inline void wait_copies() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// Whether this block is the last of `blocks` to reach this point of a reduction whose partial results they have
// written: that block then adds the partials up in a fixed order (so results repeat bit for bit; no atomics on
// data) and reads them past L1 (__ldcg), where other SMs' writes are not. The counter goes back to zero for the
// next launch. Every thread of the block must call it.
__device__ inline bool last_block(unsigned* counter, unsigned blocks) {
    __shared__ bool last;
    __threadfence();  // this thread's partial results reach device memory before the count says they did
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0) {
        last = atomicAdd(counter, 1u) == blocks - 1;
        if (last) *counter = 0;
    }
    __syncthreads();
    return last;
}

// Σ_c partial[c · stride] for c = 0 … count − 1 in this order: other blocks' partial sums, read past L1.
__device__ inline float sum_partials(const float* partial, int count, long long stride) {
    float total = 0;
    #pragma unroll 8
    for (int c = 0; c < count; ++c) total += __ldcg(partial + c * stride);
    return total;
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
