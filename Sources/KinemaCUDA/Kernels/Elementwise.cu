// Kinema's memory and elementwise kernels. Compiled at run time by NVRTC for the device's architecture.
// Every kernel walks its elements with a grid-stride loop, so any launch size covers any n.

extern "C" __global__ void fill_u16(u16* out, u16 value, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) out[i] = value;
}
extern "C" __global__ void fill_u32(u32* out, u32 value, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) out[i] = value;
}
extern "C" __global__ void fill_u64(u64* out, u64 value, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) out[i] = value;
}
// ranges: [count][start, length] element ranges of `out`; block b fills ranges b, b + gridDim.x, …
#define FILL_RANGES(NAME, TYPE)                                                                                   \
    extern "C" __global__ void NAME(TYPE* out, const long long* ranges, int count, TYPE value) {                  \
        GRID_DEPENDENCY();                                                                                        \
        for (int r = blockIdx.x; r < count; r += gridDim.x) {                                                     \
            TYPE* piece = out + ranges[2 * r];                                                                    \
            for (long long i = threadIdx.x; i < ranges[2 * r + 1]; i += blockDim.x) piece[i] = value;             \
        }                                                                                                         \
    }
FILL_RANGES(fill_ranges_u16, u16)
FILL_RANGES(fill_ranges_u32, u32)
FILL_RANGES(fill_ranges_u64, u64)

// Casts between the floating dtypes: codes 0 f32, 1 f64, 2 bf16, 3 f16.
__device__ inline double load_as(const void* p, int type, long long i) {
    switch (type) {
        case 0: return ((const float*)p)[i];
        case 1: return ((const double*)p)[i];
        case 2: return bf16_to_f32(((const u16*)p)[i]);
        default: return f16_to_f32(((const u16*)p)[i]);
    }
}
__device__ inline void store_as(void* p, int type, long long i, double v) {
    switch (type) {
        case 0: ((float*)p)[i] = (float)v; break;
        case 1: ((double*)p)[i] = v; break;
        case 2: ((u16*)p)[i] = f32_to_bf16((float)v); break;
        default: ((u16*)p)[i] = f32_to_f16((float)v); break;
    }
}
extern "C" __global__ void cast(const void* in, int inType, void* out, int outType, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) store_as(out, outType, i, load_as(in, inType, i));
}

// out[i] = in[source offset of output element i] for rank ≤ 8 (a 3D patch grid is 8 axes), in words of 2 to 16
// bytes: the host views a kept last axis (the usual case: rows of D elements regrouped) as 16-byte words, so a
// thread moves 8 bf16 at once and the index arithmetic is paid per word, not per element. 32-bit index arithmetic
// where every offset fits (div/mod on 64-bit integers is several times slower). Strides are in words.
struct PermuteMeta { long long shape[8]; long long strides[8]; int rank; };

template <typename W, typename I>
__device__ inline void permute_words(const W* in, W* out, const PermuteMeta& m, I n) {
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < n; i += (I)blockDim.x * gridDim.x) {
        I rest = i, offset = 0;
        for (int axis = m.rank - 1; axis >= 0; --axis) {
            I extent = (I)m.shape[axis];
            offset += (rest % extent) * (I)m.strides[axis];
            rest /= extent;
        }
        out[i] = in[offset];
    }
}
template <typename W>
__device__ inline void permute_sized(const void* in, void* out, const PermuteMeta& m, long long n) {
    if (n < (1LL << 31)) permute_words<W, unsigned>((const W*)in, (W*)out, m, (unsigned)n);
    else permute_words<W, long long>((const W*)in, (W*)out, m, n);
}
extern "C" __global__ void permute(const void* in, void* out, PermuteMeta meta, int wordSize, long long n) {
    GRID_DEPENDENCY();
    switch (wordSize) {
        case 2: permute_sized<u16>(in, out, meta, n); break;
        case 4: permute_sized<u32>(in, out, meta, n); break;
        case 8: permute_sized<u64>(in, out, meta, n); break;
        default: permute_sized<uint4>(in, out, meta, n); break;
    }
}

// Convolution patches: out[(b, oy, ox), (c, ky, kx)] = x[b, c, oy·s + ky − padTop, ox·s + kx − padLeft], zero
// outside the input. One thread per output element, any element size.
template <typename W>
__device__ inline void im2col_words(const W* x, W* out, int B, int C, int H, int Wd, int kh, int kw, int s, int pt,
                                    int pl, int oh, int ow, long long n) {
    long long columns = (long long)C * kh * kw;
    GRID_LOOP(i, n) {
        long long row = i / columns;
        int col = (int)(i % columns);
        int b = (int)(row / ((long long)oh * ow)), oy = (int)((row / ow) % oh), ox = (int)(row % ow);
        int c = col / (kh * kw), tap = col % (kh * kw);
        int y = oy * s + tap / kw - pt, xx = ox * s + tap % kw - pl;
        out[i] = (y >= 0 && y < H && xx >= 0 && xx < Wd) ? x[(((long long)b * C + c) * H + y) * Wd + xx] : (W)0;
    }
}
extern "C" __global__ void im2col(const void* x, void* out, int elementSize, int B, int C, int H, int Wd, int kh,
                                  int kw, int s, int pt, int pl, int oh, int ow, long long n) {
    GRID_DEPENDENCY();
    switch (elementSize) {
        case 2: im2col_words((const u16*)x, (u16*)out, B, C, H, Wd, kh, kw, s, pt, pl, oh, ow, n); break;
        case 4: im2col_words((const u32*)x, (u32*)out, B, C, H, Wd, kh, kw, s, pt, pl, oh, ow, n); break;
        default: im2col_words((const u64*)x, (u64*)out, B, C, H, Wd, kh, kw, s, pt, pl, oh, ow, n); break;
    }
}

// Pitched row copies, up to 8 per launch (blockIdx.y picks one): `rows` rows of `rowBytes` bytes each. Every
// narrow, concat and chunk is one launch (a launch per row would be thousands of copies a step; one per part still
// twelve per DiT block for adaLN's six chunks and the six-way concat of their gradients).
// 16-byte words when sizes and addresses allow, 2-byte words otherwise (every dtype is a multiple of 2).
struct RowCopy { const char* src; char* dst; long long rows, rowBytes, srcPitch, dstPitch; };
struct RowCopies { RowCopy copy[8]; };

template <typename W> __device__ inline void copy_row_words(const RowCopy& c) {
    long long words = c.rowBytes / sizeof(W);
    GRID_LOOP(i, c.rows * words) {
        long long r = i / words, w = i % words;
        ((W*)(c.dst + r * c.dstPitch))[w] = ((const W*)(c.src + r * c.srcPitch))[w];
    }
}

extern "C" __global__ void copy_rows(RowCopies list) {
    GRID_DEPENDENCY();
    const RowCopy& c = list.copy[blockIdx.y];
    if ((((u64)c.src | (u64)c.dst | (u64)c.rowBytes | (u64)c.srcPitch | (u64)c.dstPitch) & 15) == 0)
        copy_row_words<uint4>(c);
    else
        copy_row_words<u16>(c);
}

// Arithmetic on the element type T (f32 or bf16, see Common.cuh), computed in f32.

// Binary ops: 0 add, 1 sub, 2 mul.
extern "C" __global__ void binary(const T* a, const T* b, T* out, int op, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) {
        float x = ld(a, i), y = ld(b, i);
        st(out, i, op == 0 ? x + y : op == 1 ? x - y : x * y);
    }
}
extern "C" __global__ void affine(const T* a, T* out, float scale, float shift, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) st(out, i, ld(a, i) * scale + shift);
}
// Unary ops, in the order of KinemaTensor.UnaryOp: exp, log, sqrt, square, negate, tanh, abs, exact GELU, ReLU,
// quick GELU.
extern "C" __global__ void unary(const T* a, T* out, int op, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) {
        float x = ld(a, i);
        float y;
        switch (op) {
            case 0: y = expf(x); break;
            case 1: y = logf(x); break;
            case 2: y = sqrtf(x); break;
            case 3: y = x * x; break;
            case 4: y = -x; break;
            case 5: y = tanhf(x); break;
            case 6: y = fabsf(x); break;
            case 7: y = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); break;
            case 8: y = fmaxf(x, 0.0f); break;
            default: y = x / (1.0f + expf(-1.702f * x)); break;
        }
        st(out, i, y);
    }
}
extern "C" __global__ void clamp(const T* a, T* out, float lo, float hi, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) st(out, i, fminf(fmaxf(ld(a, i), lo), hi));
}
extern "C" __global__ void axpy(float alpha, const T* x, T* y, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) st(y, i, ld(y, i) + alpha * ld(x, i));
}
extern "C" __global__ void scale(T* x, float s, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) st(x, i, ld(x, i) * s);
}
extern "C" __global__ void rowwise_axpby(const float* a, const T* x, const float* b, const T* y, T* out,
                                         long long rowSize, long long n) {
    GRID_DEPENDENCY();
    GRID_LOOP(i, n) { long long row = i / rowSize; st(out, i, a[row] * ld(x, i) + b[row] * ld(y, i)); }
}

// Σ x (square = 0) or Σ x² (square = 1) of each fixed block of 8192 elements, in f64, by one 256-thread block
// with a fixed tree: the same partial sums on every run. The host adds the partials in order.
extern "C" __global__ void block_sums(const T* x, double* partial, int square, long long n) {
    GRID_DEPENDENCY();
    long long start = (long long)blockIdx.x * 8192;
    double total = 0;
    for (long long i = start + threadIdx.x; i < start + 8192 && i < n; i += 256) {
        double v = ld(x, i);
        total += square ? v * v : v;
    }
    block_reduce_store(total, partial);
}
