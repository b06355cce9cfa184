/* Per-core arithmetic ceilings of this CPU: multiply-accumulates per second that a tight,
 * register-resident loop of one instruction mix reaches on one core.
 *
 * Compiled by benchmarks/bench_ceilings.py with the machine's C compiler (-O2 -march=native)
 * and called through ctypes. Each function runs `iters` iterations of independent
 * accumulator chains (enough to cover the instructions' latency), returns a value that
 * depends on every chain (so that nothing is optimized away), and counts
 * `macs_per_iter()` multiply-accumulates per iteration:
 *
 *   fp32_fma         fused multiply-adds on float vectors as wide as the target's registers
 *                    (GCC vector extensions: any ISA the compiler targets)
 *   int8_maddubs     AVX2: vpmaddubsw (u8 x s8 -> pairs summed in int16) then vpmaddwd
 *                    by ones (-> int32) then vpaddd: the exact int8 scheme the course's
 *                    AVX2 GEMM uses
 *   int8_vnni        AVX-512 VNNI: vpdpbusd (u8 x s8, four products summed into int32)
 *   binary_shuffle   AVX2: XOR, then popcount by a vpshufb nibble table, byte sums
 *                    widened with vpsadbw every 8 vectors
 *   binary_mixed     AVX2: the vpshufb mix and scalar popcnt in one loop (vector and
 *                    integer units at once)
 *   binary_popcnt    scalar XOR + popcnt on 64-bit words (binary multiply-accumulates)
 *   binary_vpopcnt   AVX-512 VPOPCNTDQ: XOR + vpopcntq on 512-bit vectors
 *
 * A function whose instructions this build lacks returns -1 (`has_*` tell which exist).
 * No code here is from elsewhere: the instruction mixes are the ones the course's kernels
 * use, written for measurement.
 */
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

/* The widest vector the target has (64 bytes with AVX-512, else 32: wider vectors than the
 * registers are spilled to the stack by the compiler) and ten chains: ten accumulators plus
 * two operands fit in AVX2's sixteen registers. */
#if defined(__AVX512F__)
#define VLANES 16
#else
#define VLANES 8
#endif
typedef float vf __attribute__((vector_size(4 * VLANES)));

/* The compiler must assume the operand buffer changed here: no result is computed ahead. */
#define OPAQUE(buf) __asm__ volatile("" : : "r"(buf) : "memory")

/* ------------------------------------------------------------------------------ fp32 */
int fp32_fma_macs_per_iter(void) { return 10 * VLANES; }

double fp32_fma(long iters) {
    vf m, c, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9;
    for (int i = 0; i < VLANES; i++) { m[i] = 0.999f; c[i] = 0.001f * (float)(i + 1); }
    /* distinct starting values: identical chains would be merged into one by the compiler */
    a0 = c * 1.0f; a1 = c * 2.0f; a2 = c * 3.0f; a3 = c * 4.0f; a4 = c * 5.0f;
    a5 = c * 6.0f; a6 = c * 7.0f; a7 = c * 8.0f; a8 = c * 9.0f; a9 = c * 10.0f;
    for (long i = 0; i < iters; i++) {
        a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c; a4 = a4 * m + c;
        a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c; a8 = a8 * m + c; a9 = a9 * m + c;
    }
    vf s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9;
    double total = 0;
    for (int i = 0; i < VLANES; i++) total += s[i];
    return total;
}

/* ------------------------------------------------------------------------------ int8 */
int has_int8_maddubs(void) {
#if defined(__AVX2__)
    return 1;
#else
    return 0;
#endif
}

int int8_maddubs_macs_per_iter(void) { return 8 * 32; }

double int8_maddubs(long iters) {
#if defined(__AVX2__)
    __m256i a[64];  /* 2 KiB of operands in L1, read eight vectors at a time */
    for (int i = 0; i < 64; i++) a[i] = _mm256_set1_epi8((char)(i * 7 + 1));
    OPAQUE(a);
    const __m256i b = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (long i = 0; i < iters; i++) {  /* each product on a freshly loaded vector */
        const __m256i *p = a + ((i & 7) << 3);
#define STEP(s, j) s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(p[j], b), ones))
        /* four chains (only a one-cycle vpaddd on each: four cover its latency) and no spills:
         * four sums, b, ones and the loaded vectors fit in sixteen registers */
        STEP(s0, 0); STEP(s1, 1); STEP(s2, 2); STEP(s3, 3);
        STEP(s0, 4); STEP(s1, 5); STEP(s2, 6); STEP(s3, 7);
#undef STEP
    }
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3));
    int32_t out[8];
    _mm256_storeu_si256((__m256i *)out, s);
    double total = 0;
    for (int i = 0; i < 8; i++) total += out[i];
    return total;
#else
    (void)iters;
    return -1;
#endif
}

int has_int8_vnni(void) {
#if defined(__AVX512VNNI__) && defined(__AVX512F__)
    return 1;
#else
    return 0;
#endif
}

int int8_vnni_macs_per_iter(void) { return 8 * 64; }

double int8_vnni(long iters) {
#if defined(__AVX512VNNI__) && defined(__AVX512F__)
    __m512i a[64];
    for (int i = 0; i < 64; i++) a[i] = _mm512_set1_epi8((char)(i * 7 + 1));
    OPAQUE(a);
    const __m512i b = _mm512_set1_epi8(3);
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0,
            s6 = s0, s7 = s0;
    for (long i = 0; i < iters; i++) {
        const __m512i *p = a + ((i & 7) << 3);
#define STEP(s, j) s = _mm512_dpbusd_epi32(s, p[j], b)
        STEP(s0, 0); STEP(s1, 1); STEP(s2, 2); STEP(s3, 3);
        STEP(s4, 4); STEP(s5, 5); STEP(s6, 6); STEP(s7, 7);
#undef STEP
    }
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(s0, s1),
                                                  _mm512_add_epi32(s2, s3)),
                                 _mm512_add_epi32(_mm512_add_epi32(s4, s5),
                                                  _mm512_add_epi32(s6, s7)));
    return (double)_mm512_reduce_add_epi32(s);
#else
    (void)iters;
    return -1;
#endif
}

/* ---------------------------------------------------------------------------- binary */
#if defined(__AVX2__)
/* Bits set in each nibble value 0..15, in both 128-bit lanes (vpshufb looks up per lane). */
static inline __m256i nibble_counts(void) {
    return _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
}

/* Bits set in each byte of v (0..8), by looking up its two nibbles (needs lut and low). */
#define POP(v) _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(v, low)), \
                               _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)))
#endif

int has_binary_shuffle(void) { return has_int8_maddubs(); }

int binary_shuffle_macs_per_iter(void) { return 8 * 4 * 256; }

double binary_shuffle(long iters) {
#if defined(__AVX2__)
    __m256i w[64];
    for (int i = 0; i < 64; i++) w[i] = _mm256_set1_epi32((int)(0x9e3779b9u * (unsigned)(i + 1)));
    OPAQUE(w);
    const __m256i lut = nibble_counts();
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i b = _mm256_set1_epi32(0x12345678);
    __m256i total = _mm256_setzero_si256();
    /* one iteration: 8 rounds of 4 independent XOR + nibble-table popcounts summed in bytes
     * (at most 8 per byte per round: 8 rounds fit in a byte), then one vpsadbw per chain;
     * four sums, the table, the mask, b and four operands fit in sixteen registers */
    for (long i = 0; i < iters; i++) {
        __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
        const __m256i *p = w + ((i & 1) << 5);
        for (int r = 0; r < 8; r++) {
            __m256i x0 = _mm256_xor_si256(p[4 * r], b), x1 = _mm256_xor_si256(p[4 * r + 1], b),
                    x2 = _mm256_xor_si256(p[4 * r + 2], b), x3 = _mm256_xor_si256(p[4 * r + 3], b);
            c0 = _mm256_add_epi8(c0, POP(x0)); c1 = _mm256_add_epi8(c1, POP(x1));
            c2 = _mm256_add_epi8(c2, POP(x2)); c3 = _mm256_add_epi8(c3, POP(x3));
        }
        const __m256i z = _mm256_setzero_si256();
        total = _mm256_add_epi64(total, _mm256_add_epi64(
            _mm256_add_epi64(_mm256_sad_epu8(c0, z), _mm256_sad_epu8(c1, z)),
            _mm256_add_epi64(_mm256_sad_epu8(c2, z), _mm256_sad_epu8(c3, z))));
    }
    int64_t out[4];
    _mm256_storeu_si256((__m256i *)out, total);
    return (double)(out[0] + out[1] + out[2] + out[3]);
#else
    (void)iters;
    return -1;
#endif
}

int has_binary_mixed(void) { return has_int8_maddubs(); }

int binary_mixed_macs_per_iter(void) { return 8 * (2 * 256 + 4 * 64); }

double binary_mixed(long iters) {
#if defined(__AVX2__)
    /* the vector units and the scalar popcnt units at once: per round two nibble-table
     * popcounts of 256 bits and four scalar popcounts of 64 bits */
    __m256i w[64];
    uint64_t q[64];
    for (int i = 0; i < 64; i++) {
        w[i] = _mm256_set1_epi32((int)(0x9e3779b9u * (unsigned)(i + 1)));
        q[i] = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 3);
    }
    OPAQUE(w);
    OPAQUE(q);
    const __m256i lut = nibble_counts();
    const __m256i low = _mm256_set1_epi8(0x0f), b = _mm256_set1_epi32(0x12345678);
    uint64_t bq = 0x123456789abcdef0ull, t0 = 0, t1 = 0, t2 = 0, t3 = 0;
    __m256i total = _mm256_setzero_si256();
    for (long i = 0; i < iters; i++) {
        __m256i c0 = _mm256_setzero_si256(), c1 = c0;
        const __m256i *p = w + ((i & 3) << 4);
        const uint64_t *r64 = q + ((i & 1) << 5);
        for (int r = 0; r < 8; r++) {
            __m256i x0 = _mm256_xor_si256(p[2 * r], b), x1 = _mm256_xor_si256(p[2 * r + 1], b);
            c0 = _mm256_add_epi8(c0, POP(x0)); c1 = _mm256_add_epi8(c1, POP(x1));
            t0 += (uint64_t)__builtin_popcountll(r64[4 * r] ^ bq);
            t1 += (uint64_t)__builtin_popcountll(r64[4 * r + 1] ^ bq);
            t2 += (uint64_t)__builtin_popcountll(r64[4 * r + 2] ^ bq);
            t3 += (uint64_t)__builtin_popcountll(r64[4 * r + 3] ^ bq);
        }
        const __m256i z = _mm256_setzero_si256();
        total = _mm256_add_epi64(total, _mm256_add_epi64(_mm256_sad_epu8(c0, z),
                                                         _mm256_sad_epu8(c1, z)));
    }
    int64_t out[4];
    _mm256_storeu_si256((__m256i *)out, total);
    return (double)(out[0] + out[1] + out[2] + out[3]) + (double)(t0 + t1 + t2 + t3);
#else
    (void)iters;
    return -1;
#endif
}

int binary_popcnt_macs_per_iter(void) { return 8 * 64; }

double binary_popcnt(long iters) {
    uint64_t w[16];
    for (int i = 0; i < 16; i++) w[i] = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    OPAQUE(w);
    uint64_t b0 = 0x123456789abcdef0ull, b1 = 0x0badf00ddeadbeefull;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (long i = 0; i < iters; i++) {
        const uint64_t x = w[i & 15], y = w[(i + 5) & 15];
        s0 += (uint64_t)__builtin_popcountll(x ^ b0); s1 += (uint64_t)__builtin_popcountll(x ^ b1);
        s2 += (uint64_t)__builtin_popcountll(y ^ b0); s3 += (uint64_t)__builtin_popcountll(y ^ b1);
        s4 += (uint64_t)__builtin_popcountll(x ^ y);  s5 += (uint64_t)__builtin_popcountll(~x ^ b0);
        s6 += (uint64_t)__builtin_popcountll(~y ^ b1); s7 += (uint64_t)__builtin_popcountll(x ^ ~y);
        __asm__ volatile("" : "+r"(b0), "+r"(b1));  /* keep the XORs in the loop */
    }
    return (double)(s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7);
}

int has_binary_vpopcnt(void) {
#if defined(__AVX512VPOPCNTDQ__) && defined(__AVX512F__)
    return 1;
#else
    return 0;
#endif
}

int binary_vpopcnt_macs_per_iter(void) { return 8 * 512; }

double binary_vpopcnt(long iters) {
#if defined(__AVX512VPOPCNTDQ__) && defined(__AVX512F__)
    __m512i w[64];
    for (int i = 0; i < 64; i++)
        w[i] = _mm512_set1_epi64((long long)(0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)));
    OPAQUE(w);
    const __m512i b = _mm512_set1_epi64(0x123456789abcdef0ll);
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0,
            s6 = s0, s7 = s0;
    for (long i = 0; i < iters; i++) {
        const __m512i *p = w + ((i & 7) << 3);
#define STEP(s, j) s = _mm512_add_epi64(s, _mm512_popcnt_epi64(_mm512_xor_si512(p[j], b)))
        STEP(s0, 0); STEP(s1, 1); STEP(s2, 2); STEP(s3, 3);
        STEP(s4, 4); STEP(s5, 5); STEP(s6, 6); STEP(s7, 7);
#undef STEP
    }
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1),
                                                  _mm512_add_epi64(s2, s3)),
                                 _mm512_add_epi64(_mm512_add_epi64(s4, s5),
                                                  _mm512_add_epi64(s6, s7)));
    return (double)_mm512_reduce_add_epi64(s);
#else
    (void)iters;
    return -1;
#endif
}
