// The exact f32 attention (simple, not flash): one block per query or key row, so it is correct for any size and
// serves as the f32 path and the check of the bf16 flash kernels. q [P, Nq, Dh], k/v [P, Nk, Dh] with
// P = B·H (pair = b·H + h), keyMask i32 [B, Nk] or null (every key attended).
// A query row with no attended key outputs zeros, gets lse = −∞ and passes no gradient (see NNOps.attention).
//
// Determinism: fixed-tree block reductions and fixed loop orders; no atomics.

#define MAX_HEAD_DIM 256
#define KEY_CHUNK 128

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

__device__ inline float dot_row(const float* a, const float* b, int n) {
    float total = 0;
    for (int d = 0; d < n; ++d) total += a[d] * b[d];
    return total;
}

// Whether key j of batch row `batch` is attended to.
__device__ inline bool key_attended(const int* mask, long long batch, int nk, int j) {
    return mask == nullptr || mask[batch * nk + j] != 0;
}

// exp(s − l) for an attended key of a row whose log-sum-exp is l; 0 for a masked key or a row with no attended
// key (l = −∞, where s − l would be NaN or +∞).
__device__ inline float probability(bool attended, float s, float l) {
    return attended && l != -__int_as_float(0x7f800000) ? expf(s - l) : 0.0f;
}

// One block per (pair, query row): the row max and log-sum-exp of the scaled scores over the attended keys, then
// the output in chunks of keys, each thread owning output dimensions d ≡ tid (mod blockDim).
// bias (f32 [heads, nq, nk], shared by the batch rows, or null) is added to the scaled scores; with `causal`, query i
// attends to keys j ≤ i only. The training path passes neither (NNOps.biasedAttention is forward-only).
extern "C" __global__ void attention_forward_f32(const float* q, const float* k, const float* v, const int* mask,
                                                 const float* bias, int causal, float* out, float* lse, int nq,
                                                 int nk, int dh, int heads, float scale, long long rows) {
    GRID_DEPENDENCY();
    __shared__ float qRow[MAX_HEAD_DIM];
    __shared__ float probabilities[KEY_CHUNK];
    __shared__ float maxShared[MAX_THREADS];
    __shared__ double sumShared[MAX_THREADS];
    const float negativeInfinity = -__int_as_float(0x7f800000);
    BLOCK_LOOP(row, rows) {
        long long pair = row / nq, batch = pair / heads;
        int i = (int)(row % nq);
        const float* keys = k + pair * (long long)nk * dh;
        const float* values = v + pair * (long long)nk * dh;
        const float* biasRow = bias == nullptr ? nullptr : bias + ((pair % heads) * nq + i) * (long long)nk;
        auto attended = [&](int j) { return key_attended(mask, batch, nk, j) && (!causal || j <= i); };
        auto score = [&](int j) {
            return scale * dot_row(qRow, keys + (long long)j * dh, dh) + (biasRow == nullptr ? 0.0f : biasRow[j]);
        };
        for (int d = threadIdx.x; d < dh; d += blockDim.x) qRow[d] = q[row * dh + d];
        __syncthreads();
        float localMax = negativeInfinity;
        for (int j = threadIdx.x; j < nk; j += blockDim.x)
            if (attended(j)) localMax = fmaxf(localMax, score(j));
        float maximum = block_max(localMax, maxShared);
        double localSum = 0;
        if (maximum != negativeInfinity)
            for (int j = threadIdx.x; j < nk; j += blockDim.x)
                if (attended(j)) localSum += (double)expf(score(j) - maximum);
        double total = block_sum(localSum, sumShared);
        float l = maximum == negativeInfinity ? negativeInfinity : maximum + logf((float)total);
        if (threadIdx.x == 0) lse[row] = l;
        float accumulator0 = 0, accumulator1 = 0;  // dims tid and tid + blockDim (dh ≤ 2 · blockDim)
        for (int chunk = 0; chunk < nk; chunk += KEY_CHUNK) {
            int j = chunk + threadIdx.x;
            if (threadIdx.x < KEY_CHUNK && j < nk) probabilities[threadIdx.x] = probability(attended(j), score(j), l);
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
    GRID_DEPENDENCY();
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
                                                     const float* lse, const float* delta, const int* mask, float* dq,
                                                     int nq, int nk, int dh, int heads, float scale, long long rows) {
    GRID_DEPENDENCY();
    __shared__ float qRow[MAX_HEAD_DIM];
    __shared__ float gRow[MAX_HEAD_DIM];
    __shared__ float dScores[KEY_CHUNK];
    BLOCK_LOOP(row, rows) {
        long long pair = row / nq, batch = pair / heads;
        const float* keys = k + pair * (long long)nk * dh;
        const float* values = v + pair * (long long)nk * dh;
        for (int d = threadIdx.x; d < dh; d += blockDim.x) { qRow[d] = q[row * dh + d]; gRow[d] = dOut[row * dh + d]; }
        __syncthreads();
        float l = lse[row], di = delta[row];
        float accumulator0 = 0, accumulator1 = 0;
        for (int chunk = 0; chunk < nk; chunk += KEY_CHUNK) {
            int j = chunk + threadIdx.x;
            if (threadIdx.x < KEY_CHUNK && j < nk) {
                float p = probability(key_attended(mask, batch, nk, j),
                                      scale * dot_row(qRow, keys + (long long)j * dh, dh), l);
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

// dV_j = Σ_i P_ij dO_i, dK_j = scale · Σ_i dS_ij q_i. One block per (pair, key row), queries in chunks; a masked
// key gets zeros.
extern "C" __global__ void attention_backward_dkv_f32(const float* q, const float* k, const float* v,
                                                      const float* dOut, const float* lse, const float* delta,
                                                      const int* mask, float* dk, float* dv, int nq, int nk, int dh,
                                                      int heads, float scale, long long rows) {
    GRID_DEPENDENCY();
    __shared__ float kRow[MAX_HEAD_DIM];
    __shared__ float vRow[MAX_HEAD_DIM];
    __shared__ float probabilities[KEY_CHUNK];
    __shared__ float dScores[KEY_CHUNK];
    BLOCK_LOOP(row, rows) {
        long long pair = row / nk, batch = pair / heads;
        bool attended = key_attended(mask, batch, nk, (int)(row % nk));
        const float* queries = q + pair * (long long)nq * dh;
        const float* gradients = dOut + pair * (long long)nq * dh;
        for (int d = threadIdx.x; d < dh; d += blockDim.x) { kRow[d] = k[row * dh + d]; vRow[d] = v[row * dh + d]; }
        __syncthreads();
        float dk0 = 0, dk1 = 0, dv0 = 0, dv1 = 0;
        for (int chunk = 0; chunk < nq; chunk += KEY_CHUNK) {
            int i = chunk + threadIdx.x;
            if (threadIdx.x < KEY_CHUNK && i < nq) {
                long long qi = pair * nq + i;
                float p = probability(attended, scale * dot_row(queries + (long long)i * dh, kRow, dh), lse[qi]);
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
