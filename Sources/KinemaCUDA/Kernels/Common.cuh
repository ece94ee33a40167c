// Prepended by CUDABackend to every kernel file before NVRTC compiles it: what all kernels share.

// Grid-stride loop: any launch size covers any n.
#define GRID_LOOP(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
                             i += (long long)blockDim.x * gridDim.x)

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

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
