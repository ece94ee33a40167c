// MARK: Hopper (sm_90a) building blocks shared by the kernel files built for that target (NVRTC.swift's
// architectureSpecific): mbarriers, TMA copies, wgmma descriptors and their fences. Empty on every other target.

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// cuda.h's CUtensorMap: 128 opaque bytes made by cuTensorMapEncodeTiled on the host, passed by value.
struct __align__(64) TensorMap { u64 opaque[16]; };

// mbarriers (64-bit words in shared memory): a phase completes when `count` threads have arrived and the
// transaction bytes announced by arrive.expect_tx have landed; waiters name the parity of the phase they wait for.
__device__ inline void barrier_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count));
}
__device__ inline void barrier_expect_bytes(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
// Arrives on the barrier at the same offset in the shared memory of the cluster's CTA `rank` (this CTA's too).
__device__ inline void barrier_arrive_cluster(u32 bar, u32 rank) {
    asm volatile("{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
                 "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}" ::"r"(bar), "r"(rank) : "memory");
}
__device__ inline void barrier_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ inline void barrier_wait(u32 bar, u32 parity) {
    u32 done = 0;
    while (!done) {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
                     : "=r"(done) : "r"(bar), "r"(parity) : "memory");
    }
}
__device__ inline void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ inline u32 cluster_rank() { u32 r; asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r)); return r; }
// The 128 threads of one warpgroup wait for each other (named barrier `id`; 0 is __syncthreads').
__device__ inline void warpgroup_sync(int id) { asm volatile("bar.sync %0, 128;" ::"r"(id) : "memory"); }

// TMA: a box of a 2-D tensor (coordinates innermost first) into shared memory, its bytes counted on `bar`; the same
// into every CTA of `mask` at the same offsets (each CTA's barrier at `bar`'s offset counts them); a box out of
// shared memory into the tensor (a bulk group: commit, then wait until it has read, or finished).
__device__ inline void tma_load(u32 target, const TensorMap* map, u32 bar, int inner, int outer) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];"
                 ::"r"(target), "l"((u64)map), "r"(bar), "r"(inner), "r"(outer) : "memory");
}
__device__ inline void tma_load_multicast(u32 target, const TensorMap* map, u32 bar, int inner, int outer, u16 mask) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster"
                 " [%0], [%1, {%3, %4}], [%2], %5;"
                 ::"r"(target), "l"((u64)map), "r"(bar), "r"(inner), "r"(outer), "h"(mask) : "memory");
}
__device__ inline void tma_store(const TensorMap* map, u32 source, int inner, int outer) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.tile.bulk_group [%0, {%2, %3}], [%1];"
                 ::"l"((u64)map), "r"(source), "r"(inner), "r"(outer) : "memory");
}
__device__ inline void tma_store_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
__device__ inline void tma_store_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }
__device__ inline void tma_store_wait_all() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
// Writes of this thread to shared memory become visible to the TMA (the async proxy).
__device__ inline void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// A wgmma shared-memory matrix descriptor for 128-byte swizzled tiles: start address, the leading and stride byte
// offsets (PTX ISA, "matrix descriptor"), layout 1 = 128B swizzle. K-major tiles (rows of 64 K elements, 128 bytes):
// 8-row atoms 1024 bytes apart (stride), the leading offset unused. MN-major tiles (rows of 64 N elements, one per
// k): the next 8 k rows 1024 bytes on (stride), the next 64 columns one 64-row box on (leading).
__device__ inline u64 matrix_descriptor(u32 address, u32 leading, u32 stride) {
    return (u64)((address & 0x3FFFF) >> 4) | ((u64)(leading >> 4) << 16) | ((u64)(stride >> 4) << 32) | (1ull << 62);
}
// The same for unswizzled tiles of core matrices (8 rows × 16 bytes, 128 contiguous bytes; layout 0): `leading`
// is the step between core matrices along K, `stride` the step along M or N, for K-major and MN-major tiles alike.
__device__ inline u64 core_matrix_descriptor(u32 address, u32 leading, u32 stride) {
    return (u64)((address & 0x3FFFF) >> 4) | ((u64)(leading >> 4) << 16) | ((u64)(stride >> 4) << 32);
}

__device__ inline void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ inline void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ inline void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }

// Warpgroup products D[64 × N] (+)= A[64 × 16] · B[16 × N] (bf16 in, f32 accumulators, `accumulate` 0 overwrites D)
// for the N that flash attention's tiles and head dims need, with A from shared memory (`shared`: a descriptor) or
// from registers (`registers`: the warp's 16 × 16 slice as mma.sync's m16n8k16 A fragment, four words), B from
// shared memory, K-major (TRANSPOSE_B 0) or N-major (1). The N / 2 accumulators a thread holds lie as mma.sync's C
// tiles side by side: warp w has rows 16 w + g and 16 w + g + 8 (g = lane / 4), d[4 j …] columns 8 j + 2 (lane % 4),
// + 1 of row g, then of row g + 8.
template <int N> struct Wgmma;

#define WGMMA_R0 "%0, %1, %2, %3, %4, %5, %6, %7"
#define WGMMA_R8 "%8, %9, %10, %11, %12, %13, %14, %15"
#define WGMMA_R16 "%16, %17, %18, %19, %20, %21, %22, %23"
#define WGMMA_R24 "%24, %25, %26, %27, %28, %29, %30, %31"
#define WGMMA_R32 "%32, %33, %34, %35, %36, %37, %38, %39"
#define WGMMA_R40 "%40, %41, %42, %43, %44, %45, %46, %47"
#define WGMMA_R48 "%48, %49, %50, %51, %52, %53, %54, %55"
#define WGMMA_R56 "%56, %57, %58, %59, %60, %61, %62, %63"
#define WGMMA_R64 "%64, %65, %66, %67, %68, %69, %70, %71"
#define WGMMA_R72 "%72, %73, %74, %75, %76, %77, %78, %79"
#define WGMMA_R80 "%80, %81, %82, %83, %84, %85, %86, %87"
#define WGMMA_R88 "%88, %89, %90, %91, %92, %93, %94, %95"
#define WGMMA_F8(i) \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), \
    "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define WGMMA_REGISTERS_16 WGMMA_R0 ", " WGMMA_R8
#define WGMMA_OPERANDS_16 WGMMA_F8(0), WGMMA_F8(8)
#define WGMMA_REGISTERS_32 WGMMA_R0 ", " WGMMA_R8 ", " WGMMA_R16 ", " WGMMA_R24
#define WGMMA_OPERANDS_32 WGMMA_F8(0), WGMMA_F8(8), WGMMA_F8(16), WGMMA_F8(24)
#define WGMMA_REGISTERS_40 WGMMA_R0 ", " WGMMA_R8 ", " WGMMA_R16 ", " WGMMA_R24 ", " WGMMA_R32
#define WGMMA_OPERANDS_40 WGMMA_F8(0), WGMMA_F8(8), WGMMA_F8(16), WGMMA_F8(24), WGMMA_F8(32)
#define WGMMA_REGISTERS_48 WGMMA_R0 ", " WGMMA_R8 ", " WGMMA_R16 ", " WGMMA_R24 ", " WGMMA_R32 ", " WGMMA_R40
#define WGMMA_OPERANDS_48 WGMMA_F8(0), WGMMA_F8(8), WGMMA_F8(16), WGMMA_F8(24), WGMMA_F8(32), WGMMA_F8(40)
#define WGMMA_REGISTERS_64 \
    WGMMA_R0 ", " WGMMA_R8 ", " WGMMA_R16 ", " WGMMA_R24 ", " WGMMA_R32 ", " WGMMA_R40 ", " WGMMA_R48 ", " WGMMA_R56
#define WGMMA_OPERANDS_64 \
    WGMMA_F8(0), WGMMA_F8(8), WGMMA_F8(16), WGMMA_F8(24), WGMMA_F8(32), WGMMA_F8(40), WGMMA_F8(48), WGMMA_F8(56)
#define WGMMA_REGISTERS_96 \
    WGMMA_R0 ", " WGMMA_R8 ", " WGMMA_R16 ", " WGMMA_R24 ", " WGMMA_R32 ", " WGMMA_R40 ", " \
    WGMMA_R48 ", " WGMMA_R56 ", " WGMMA_R64 ", " WGMMA_R72 ", " WGMMA_R80 ", " WGMMA_R88
#define WGMMA_OPERANDS_96 \
    WGMMA_F8(0), WGMMA_F8(8), WGMMA_F8(16), WGMMA_F8(24), WGMMA_F8(32), WGMMA_F8(40), \
    WGMMA_F8(48), WGMMA_F8(56), WGMMA_F8(64), WGMMA_F8(72), WGMMA_F8(80), WGMMA_F8(88)
// One shape: N, then the operand numbers that follow its N / 2 accumulators (R, R + 1, … R + 6).
#define WGMMA_SHAPE(N, R0, R1, R2, R3, R4, R5, R6)                                                                   \
    template <> struct Wgmma<N> {                                                                                    \
        template <int TRANSPOSE_B> static __device__ inline void shared(float* d, u64 a, u64 b, int accumulate) {  \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #R2 ", 0;\n"                                         \
                         "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32.bf16.bf16 {" WGMMA_REGISTERS_##R0 "}, "    \
                         "%" #R0 ", %" #R1 ", p, 1, 1, 0, %" #R3 ";\n}\n"                                            \
                         : WGMMA_OPERANDS_##R0 : "l"(a), "l"(b), "r"(accumulate), "n"(TRANSPOSE_B));             \
        }                                                                                                            \
        template <int TRANSPOSE_B>                                                                                   \
        static __device__ inline void registers(float* d, const u32* a, u64 b, int accumulate) {                    \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #R5 ", 0;\n"                                         \
                         "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32.bf16.bf16 {" WGMMA_REGISTERS_##R0 "}, "    \
                         "{%" #R0 ", %" #R1 ", %" #R2 ", %" #R3 "}, %" #R4 ", p, 1, 1, %" #R6 ";\n}\n"                \
                         : WGMMA_OPERANDS_##R0                                                                       \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TRANSPOSE_B)); \
        }                                                                                                            \
    };
WGMMA_SHAPE(32, 16, 17, 18, 19, 20, 21, 22)
WGMMA_SHAPE(64, 32, 33, 34, 35, 36, 37, 38)
WGMMA_SHAPE(80, 40, 41, 42, 43, 44, 45, 46)
WGMMA_SHAPE(96, 48, 49, 50, 51, 52, 53, 54)
WGMMA_SHAPE(128, 64, 65, 66, 67, 68, 69, 70)
WGMMA_SHAPE(192, 96, 97, 98, 99, 100, 101, 102)

#endif
