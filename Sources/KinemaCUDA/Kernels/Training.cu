// Kinema's training kernels: the fused AdamW step (with the bf16 compute copy), EMA and gradient norm,
// Philox-4x32-10 normals, and the diffusion losses.
// Compiled at run time by NVRTC. The float arithmetic that must match the CPU reference bit for bit (the
// optimizer) uses the _rn intrinsics, so the compiler cannot contract it into FMAs the CPU does not use.

// ---------------------------------------------------------------------------------------------------------------
// Optimizer, over a ParameterArena's flat buffers: one launch per step for AdamW (with the compute copy), one for
// the EMA, two for the gradient norm. All constants arrive already rounded to the state's precision, as the CPU
// computes them. With `vectorized` (every pointer 16-byte aligned, 8 for a 16-bit copy) each thread moves four
// elements per 16-byte load; elements past the last whole vector (all of them without `vectorized`) take the
// scalar grid-stride loop.

struct AdamWConstants {
    float beta1, beta2, oneMinusBeta1, oneMinusBeta2, scale, decay, stepSize, sqrtCorrection2, eps;
};

// One element: updates m and v in place and returns the new weight (the CPU's expression, operation by operation).
__device__ inline float adamw_element(const AdamWConstants& c, float p, float g, float& m, float& v) {
    float grad = __fmul_rn(g, c.scale);
    m = __fadd_rn(__fmul_rn(c.beta1, m), __fmul_rn(c.oneMinusBeta1, grad));
    v = __fadd_rn(__fmul_rn(c.beta2, v), __fmul_rn(__fmul_rn(c.oneMinusBeta2, grad), grad));
    float denominator = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), c.sqrtCorrection2), c.eps);
    return __fsub_rn(__fmul_rn(p, c.decay), __fdiv_rn(__fmul_rn(c.stepSize, m), denominator));
}

// The compute copy rounds as KinemaTensor's bf16Bits / f16Bits do (f32_to_bf16, f32_to_f16 of Common.cuh).
// Compute-copy codes: 0 none, 1 f32, 2 bf16, 3 f16.
__device__ inline void store_copy(void* copy, int copyType, long long i, float x) {
    if (copyType == 1) ((float*)copy)[i] = x;
    else if (copyType == 2) ((u16*)copy)[i] = f32_to_bf16(x);
    else if (copyType == 3) ((u16*)copy)[i] = f32_to_f16(x);
}

// Elements 4j … 4j+3 in one store (16 bytes for f32, 8 for the 16-bit types).
__device__ inline void store_copy4(void* copy, int copyType, long long j, float4 x) {
    if (copyType == 1) {
        ((float4*)copy)[j] = x;
    } else if (copyType == 2) {
        ((uint2*)copy)[j] = make_uint2((u32)f32_to_bf16(x.x) | ((u32)f32_to_bf16(x.y) << 16),
                                       (u32)f32_to_bf16(x.z) | ((u32)f32_to_bf16(x.w) << 16));
    } else if (copyType == 3) {
        ((uint2*)copy)[j] = make_uint2((u32)f32_to_f16(x.x) | ((u32)f32_to_f16(x.y) << 16),
                                       (u32)f32_to_f16(x.z) | ((u32)f32_to_f16(x.w) << 16));
    }
}

// ema ← decay · ema + rest · p, rest = 1 − decay: the CPU's expression, in f32, f64 and four f32 at a time.
__device__ inline float ema_element(float e, float p, float decay, float rest) {
    return __fadd_rn(__fmul_rn(decay, e), __fmul_rn(rest, p));
}
__device__ inline double ema_element(double e, double p, double decay, double rest) {
    return __dadd_rn(__dmul_rn(decay, e), __dmul_rn(rest, p));
}
__device__ inline float4 ema_element4(float4 e, float4 p, float decay, float rest) {
    return make_float4(ema_element(e.x, p.x, decay, rest), ema_element(e.y, p.y, decay, rest),
                       ema_element(e.z, p.z, decay, rest), ema_element(e.w, p.w, decay, rest));
}

// `ema` (may be null) moves toward the updated weights with emaUpdate's arithmetic.
extern "C" __global__ void adamw_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                     float* __restrict__ v, void* __restrict__ copy, int copyType, float beta1,
                                     float beta2, float scale, float decay, float stepSize, float sqrtCorrection2,
                                     float eps, float* __restrict__ ema, float emaDecay, long long n,
                                     int vectorized) {
    GRID_DEPENDENCY();
    const AdamWConstants c = {beta1, beta2, __fsub_rn(1.0f, beta1), __fsub_rn(1.0f, beta2), scale, decay, stepSize,
                              sqrtCorrection2, eps};
    const float emaRest = __fsub_rn(1.0f, emaDecay);
    const long long vectors = vectorized ? n / 4 : 0;
    GRID_LOOP(j, vectors) {
        float4 pp = ((const float4*)p)[j], gg = ((const float4*)g)[j];
        float4 mm = ((const float4*)m)[j], vv = ((const float4*)v)[j];
        pp.x = adamw_element(c, pp.x, gg.x, mm.x, vv.x);
        pp.y = adamw_element(c, pp.y, gg.y, mm.y, vv.y);
        pp.z = adamw_element(c, pp.z, gg.z, mm.z, vv.z);
        pp.w = adamw_element(c, pp.w, gg.w, mm.w, vv.w);
        ((float4*)p)[j] = pp;
        ((float4*)m)[j] = mm;
        ((float4*)v)[j] = vv;
        store_copy4(copy, copyType, j, pp);
        if (ema) ((float4*)ema)[j] = ema_element4(((const float4*)ema)[j], pp, emaDecay, emaRest);
    }
    for (long long i = vectors * 4 + blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        float mi = m[i], vi = v[i];
        float pi = adamw_element(c, p[i], g[i], mi, vi);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        store_copy(copy, copyType, i, pi);
        if (ema) ema[i] = ema_element(ema[i], pi, emaDecay, emaRest);
    }
}

extern "C" __global__ void adamw_f64(double* p, const double* g, double* m, double* v, double beta1, double beta2,
                                     double scale, double decay, double stepSize, double sqrtCorrection2, double eps,
                                     double* ema, double emaDecay, long long n) {
    GRID_DEPENDENCY();
    const double oneMinusBeta1 = __dsub_rn(1.0, beta1), oneMinusBeta2 = __dsub_rn(1.0, beta2);
    const double emaRest = __dsub_rn(1.0, emaDecay);
    GRID_LOOP(i, n) {
        double grad = __dmul_rn(g[i], scale);
        double m1 = __dadd_rn(__dmul_rn(beta1, m[i]), __dmul_rn(oneMinusBeta1, grad));
        double m2 = __dadd_rn(__dmul_rn(beta2, v[i]), __dmul_rn(__dmul_rn(oneMinusBeta2, grad), grad));
        m[i] = m1;
        v[i] = m2;
        double denominator = __dadd_rn(__ddiv_rn(__dsqrt_rn(m2), sqrtCorrection2), eps);
        double pi = __dsub_rn(__dmul_rn(p[i], decay), __ddiv_rn(__dmul_rn(stepSize, m1), denominator));
        p[i] = pi;
        if (ema) ema[i] = ema_element(ema[i], pi, emaDecay, emaRest);
    }
}

extern "C" __global__ void ema_f32(float* __restrict__ e, const float* __restrict__ p, float decay, long long n,
                                   int vectorized) {
    GRID_DEPENDENCY();
    const float rest = __fsub_rn(1.0f, decay);
    const long long vectors = vectorized ? n / 4 : 0;
    GRID_LOOP(j, vectors) {
        ((float4*)e)[j] = ema_element4(((const float4*)e)[j], ((const float4*)p)[j], decay, rest);
    }
    for (long long i = vectors * 4 + blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        e[i] = ema_element(e[i], p[i], decay, rest);
    }
}

extern "C" __global__ void ema_f64(double* e, const double* p, double decay, long long n) {
    GRID_DEPENDENCY();
    const double rest = __dsub_rn(1.0, decay);
    GRID_LOOP(i, n) e[i] = ema_element(e[i], p[i], decay, rest);
}

// Σ x² in f64, deterministic: the grid size depends only on n, each thread sums its grid-stride elements in order,
// each block reduces with the fixed tree into partial[blockIdx.x], and squared_norm_total (one block) adds the
// partials with the same fixed pattern. No atomics.
extern "C" __global__ void squared_norm_f32(const float* __restrict__ x, double* partial, long long n, int vectorized) {
    GRID_DEPENDENCY();
    double total = 0;
    const long long vectors = vectorized ? n / 4 : 0;
    GRID_LOOP(j, vectors) {
        float4 a = ((const float4*)x)[j];
        double ax = a.x, ay = a.y, az = a.z, aw = a.w;
        total += (ax * ax + ay * ay) + (az * az + aw * aw);
    }
    for (long long i = vectors * 4 + blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        double a = x[i];
        total += a * a;
    }
    block_reduce_store(total, partial);
}

extern "C" __global__ void squared_norm_f64(const double* x, double* partial, long long n) {
    GRID_DEPENDENCY();
    double total = 0;
    GRID_LOOP(i, n) total += x[i] * x[i];
    block_reduce_store(total, partial);
}

extern "C" __global__ void squared_norm_total(const double* partial, double* total, long long count) {
    GRID_DEPENDENCY();
    double sum = 0;
    for (long long i = threadIdx.x; i < count; i += 256) sum += partial[i];
    block_reduce_store(sum, total);
}

// ---------------------------------------------------------------------------------------------------------------
// Philox-4x32-10, as KinemaTensor.Philox4x32: counter (lo, hi) = offset + index / 4, stream 0, key = seed.

__device__ inline uint4 philox_block(u64 counter, u32 k0, u32 k1) {
    u32 c0 = (u32)counter, c1 = (u32)(counter >> 32), c2 = 0, c3 = 0;
    #pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        u32 hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        u32 hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        u32 n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    }
    return make_uint4(c0, c1, c2, c3);
}

// ((bits >> 8) + 0.5) / 2^24 in (0, 1), the one value that rounds to 1 clamped just below it.
__device__ inline float unit_float(u32 bits) {
    float x = __fmul_rn(__fadd_rn((float)(bits >> 8), 0.5f), 5.9604644775390625e-8f);
    return fminf(x, __uint_as_float(0x3F7FFFFFu));
}

// Swift's Float.pi rounds toward zero (0x40490FDA); 2π is that times two, exactly.
__device__ inline void box_muller(u32 a, u32 b, float* even, float* odd) {
    float radius = __fsqrt_rn(__fmul_rn(-2.0f, logf(unit_float(a))));
    float angle = __fmul_rn(__uint_as_float(0x40C90FDAu), unit_float(b));
    float s, c;
    sincosf(angle, &s, &c);
    *even = __fmul_rn(radius, c);
    *odd = __fmul_rn(radius, s);
}

// One thread per Philox counter: its four outputs are elements 4c … 4c+3 of the draw.
extern "C" __global__ void philox_normal_f32(float* out, u32 k0, u32 k1, u64 offset, long long n) {
    GRID_DEPENDENCY();
    long long counters = (n + 3) / 4;
    GRID_LOOP(c, counters) {
        uint4 r = philox_block(offset + (u64)c, k0, k1);
        float z[4];
        box_muller(r.x, r.y, &z[0], &z[1]);
        box_muller(r.z, r.w, &z[2], &z[3]);
        long long base = c * 4;
        #pragma unroll
        for (int lane = 0; lane < 4; ++lane) if (base + lane < n) out[base + lane] = z[lane];
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Diffusion losses. Block b covers elements [8192·j, 8192·(j+1)) of sample s = b / blocksPerSample, j = b % that,
// the same fixed blocks as the CPU's blockedSum; each block writes its f64 partial sum with a fixed tree, and the
// host adds the partials of a sample in order.

extern "C" __global__ void mse_f32(const float* p, const float* q, float* g, const double* weights, double* partial,
                                   long long size, long long blocksPerSample) {
    GRID_DEPENDENCY();
    long long sample = blockIdx.x / blocksPerSample, chunk = blockIdx.x % blocksPerSample;
    long long start = chunk * 8192, end = min(start + 8192, size);
    float factor = (float)(2.0 * weights[sample] / (double)size);
    double total = 0;
    for (long long j = start + threadIdx.x; j < end; j += 256) {
        long long i = sample * size + j;
        float d = __fsub_rn(p[i], q[i]);
        g[i] = __fmul_rn(factor, d);
        double dd = d;
        total += dd * dd;
    }
    block_reduce_store(total, partial);
}

// Per-sample coefficients, 7 doubles each: coef1, coef2, posteriorLogVariance, logBeta, sqrtRecipAlphaBar,
// sqrtRecipM1AlphaBar, isFirstStep (0 or 1).
__device__ inline void approx_normal_cdf(double u, double* cdf, double* density) {
    const double a = sqrt(2.0 / 3.141592653589793);
    double inner = a * (u + 0.044715 * u * u * u);
    double t = tanh(inner);
    *cdf = 0.5 * (1 + t);
    *density = 0.5 * (1 - t * t) * a * (1 + 3 * 0.044715 * u * u);
}

__device__ inline void discretized_log_likelihood(double x, double mean, double logScale, double* value, double* dLogScale) {
    double inverseScale = exp(-logScale);
    double centered = x - mean;
    double plusIn = inverseScale * (centered + 1 / 255.0), minusIn = inverseScale * (centered - 1 / 255.0);
    double cdfPlus, densityPlus, cdfMinus, densityMinus;
    approx_normal_cdf(plusIn, &cdfPlus, &densityPlus);
    approx_normal_cdf(minusIn, &cdfMinus, &densityMinus);
    double dPlus = densityPlus * -plusIn, dMinus = densityMinus * -minusIn;
    const double floorValue = 1e-12;
    if (x < -0.999) {
        if (cdfPlus > floorValue) { *value = log(cdfPlus); *dLogScale = dPlus / cdfPlus; }
        else { *value = log(floorValue); *dLogScale = 0; }
        return;
    }
    if (x > 0.999) {
        double upper = 1 - cdfMinus;
        if (upper > floorValue) { *value = log(upper); *dLogScale = -dMinus / upper; }
        else { *value = log(floorValue); *dLogScale = 0; }
        return;
    }
    double delta = cdfPlus - cdfMinus;
    if (delta > floorValue) { *value = log(delta); *dLogScale = (dPlus - dMinus) / delta; }
    else { *value = log(floorValue); *dLogScale = 0; }
}

extern "C" __global__ void vlb_f32(const float* epsilon, const float* varianceValues, const float* xStart,
                                   const float* xT, const float* mask, float* g, const double* coefficients,
                                   const double* weights, double* partial, long long size, long long blocksPerSample) {
    GRID_DEPENDENCY();
    long long sample = blockIdx.x / blocksPerSample, chunk = blockIdx.x % blocksPerSample;
    long long start = chunk * 8192, end = min(start + 8192, size);
    const double* c = coefficients + sample * 7;
    const double coef1 = c[0], coef2 = c[1], posteriorLogVariance = c[2], logBeta = c[3];
    const double sqrtRecipAlphaBar = c[4], sqrtRecipM1AlphaBar = c[5];
    const bool isFirstStep = c[6] != 0;
    const double weight = weights[sample];
    const double bits = 1 / log(2.0);
    double total = 0;
    for (long long j = start + threadIdx.x; j < end; j += 256) {
        long long i = sample * size + j;
        double x0 = xStart[i], xt = xT[i], eps = epsilon[i], v = varianceValues[i];
        double predictedX0 = sqrtRecipAlphaBar * xt - sqrtRecipM1AlphaBar * eps;
        double modelMean = coef1 * predictedX0 + coef2 * xt;
        double fraction = (v + 1) / 2;
        double modelLogVariance = fraction * logBeta + (1 - fraction) * posteriorLogVariance;
        double value, dLogVariance;
        if (!isFirstStep) {
            double trueMean = coef1 * x0 + coef2 * xt;
            double meanGap = trueMean - modelMean;
            double ratio = exp(posteriorLogVariance - modelLogVariance);
            double inverseVariance = exp(-modelLogVariance);
            double kl = 0.5 * (-1 + modelLogVariance - posteriorLogVariance + ratio + meanGap * meanGap * inverseVariance);
            double dKL = 0.5 * (1 - ratio - meanGap * meanGap * inverseVariance);
            value = kl * bits;
            dLogVariance = dKL * bits;
        } else {
            double logLikelihood, dLogScale;
            discretized_log_likelihood(x0, modelMean, 0.5 * modelLogVariance, &logLikelihood, &dLogScale);
            value = -logLikelihood * bits;
            dLogVariance = -dLogScale * 0.5 * bits;
        }
        double dv = dLogVariance * 0.5 * (logBeta - posteriorLogVariance);
        double kept = mask ? (double)mask[i] : 1.0;  // 0: an element left out (a conditioning frame)
        g[i] = (float)(weight * dv * kept / (double)size);
        total += value * kept;
    }
    block_reduce_store(total, partial);
}
