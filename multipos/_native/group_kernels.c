/*
 * One-pass GTA transforms of (B, H, L, D) tensors on the CPU.
 *
 * GTA (Miyato et al., 2024, arXiv:2310.10375), Eq. (5), transforms q, k, v and the attention
 * output by per-token block-diagonal representations rho_i. Written as torch operations, a
 * transform of a tensor mixing SO(2) and SE(3) sections reads and writes it several times
 * (a copy, a complex product per SO(2) section, a matmul and a copy per SE(3) chunk); here
 * every row is read once and written once.
 *
 * A section is described by nine int64 fields (see multipos/group_native.py):
 *   kind, start, count, size, table, table_b, table_l, table_n, aux
 * kind 0 (rotations): `count` channel pairs from `start`; `table` holds per pair
 *   (cos, cos) and `aux` (-sin, sin) (or (sin, -sin) to turn the other way), both
 *   (B | 1, L, 2 count) with strides table_b, table_l: y = c x + s swap(x), which is RoPE's
 *   complex product c x0 - s x1, s x0 + c x1.
 * kind 1 (matrices): `count` blocks of `size` channels from `start`; `table` holds per token
 *   and block the transposed effective matrix E^T (so row c of it is column c of E), with
 *   strides table_b, table_l, table_n (0 when one matrix serves every block of a token).
 *   y_r = sum_c E[r][c] x_c, summed in order c = 0, 1, ... For 4 x 4 blocks the table holds
 *   pairs of blocks (2p, 2p + 1): (B | 1, L, P, 4, 8), row c being column c of both, and
 *   table_n steps from pair to pair.
 * Channels after the last section are copied when the destination is another tensor.
 *
 * Products and sums are rounded one at a time (the build turns off contraction into fused
 * multiply-adds), so the bits do not depend on the instruction set the compiler picks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FIELDS 9

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));
typedef int64_t v8l __attribute__((vector_size(64)));

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* One copy of the loops for AVX2 machines, one for any x86-64; the same bits from both. */
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif
/* Inlined into each clone, so the loops are compiled for its instruction set. */
#define INLINE inline __attribute__((always_inline))

/* Every (b, h, l) row of the tensors: xr, yr point at its channel 0. */
#define EACH_ROW(T, ...)                                                                      \
    {                                                                                         \
        const int64_t nb = shape[0], nh = shape[1], nl = shape[2];                            \
        const int64_t xb_ = xs[0], xh_ = xs[1], xl_ = xs[2], yb_ = ys[0], yh_ = ys[1],        \
                      yl_ = ys[2];                                                            \
        for (int64_t b = 0; b < nb; b++)                                                      \
            for (int64_t h = 0; h < nh; h++) {                                                \
                const T *xbh = x + b * xb_ + h * xh_;                                         \
                T *ybh = y + b * yb_ + h * yh_;                                               \
                for (int64_t l = 0; l < nl; l++) {                                            \
                    const T *xr = xbh + l * xl_;                                              \
                    T *yr = ybh + l * yl_;                                                    \
                    __VA_ARGS__                                                               \
                }                                                                             \
            }                                                                                 \
    }

#define DEFINE_KERNEL(NAME, T, V, M)                                                          \
    INLINE static V NAME##_load(const T *p) {                                                 \
        V v;                                                                                  \
        memcpy(&v, p, sizeof(V));                                                             \
        return v;                                                                             \
    }                                                                                         \
    /* Two blocks y = E x side by side: cols[c] holds column c of each block's E. */          \
    INLINE static void NAME##_two4(const T *cols, const T *xb, T *yb) {                       \
        V xv = NAME##_load(xb);                                                               \
        V acc = NAME##_load(cols) * __builtin_shuffle(xv, (M){0, 0, 0, 0, 4, 4, 4, 4});       \
        acc += NAME##_load(cols + 8) * __builtin_shuffle(xv, (M){1, 1, 1, 1, 5, 5, 5, 5});    \
        acc += NAME##_load(cols + 16) * __builtin_shuffle(xv, (M){2, 2, 2, 2, 6, 6, 6, 6});   \
        acc += NAME##_load(cols + 24) * __builtin_shuffle(xv, (M){3, 3, 3, 3, 7, 7, 7, 7});   \
        memcpy(yb, &acc, sizeof(V));                                                          \
    }                                                                                         \
    INLINE static void NAME##_block4(const T *m, const T *xb, T *yb) {                        \
        T in[4] = {xb[0], xb[1], xb[2], xb[3]};                                               \
        for (int r = 0; r < 4; r++)                                                           \
            yb[r] = ((m[r] * in[0] + m[8 + r] * in[1]) + m[16 + r] * in[2]) + m[24 + r] * in[3]; \
    }                                                                                         \
                                                                                              \
    INLINE static void NAME##_rotations(const T *x, T *y, const int64_t *shape, const int64_t *xs,  \
                                 const int64_t *ys, const int64_t *f, int64_t b0) {                       \
        const int64_t start = f[1], width = 2 * f[2], tb = f[5], tl = f[6];                   \
        const T *cos = (const T *)(intptr_t)f[4], *sin = (const T *)(intptr_t)f[8];           \
        EACH_ROW(T, {                                                                            \
            const T *c = cos + (b + b0) * tb + l * tl, *s = sin + (b + b0) * tb + l * tl;     \
            xr += start;                                                                      \
            yr += start;                                                                      \
            int64_t ch = 0;                                                                   \
            for (; ch + 8 <= width; ch += 8) {                                                \
                V xv = NAME##_load(xr + ch);                                                  \
                V sw = __builtin_shuffle(xv, (M){1, 0, 3, 2, 5, 4, 7, 6});                    \
                V out = NAME##_load(c + ch) * xv + NAME##_load(s + ch) * sw;                  \
                memcpy(yr + ch, &out, sizeof(V));                                             \
            }                                                                                 \
            for (; ch < width; ch += 2) {                                                     \
                T x0 = xr[ch], x1 = xr[ch + 1];                                               \
                yr[ch] = c[ch] * x0 + s[ch] * x1;                                             \
                yr[ch + 1] = c[ch + 1] * x1 + s[ch + 1] * x0;                                 \
            }                                                                                 \
        })                                                                                    \
    }                                                                                         \
                                                                                              \
    INLINE static void NAME##_matrices4(const T *x, T *y, const int64_t *shape, const int64_t *xs,  \
                                 const int64_t *ys, const int64_t *f, int64_t b0) {                       \
        const int64_t start = f[1], count = f[2], per = f[7], tb = f[5], tl = f[6];           \
        const T *table = (const T *)(intptr_t)f[4];                                           \
        EACH_ROW(T, {                                                                            \
            const T *m = table + (b + b0) * tb + l * tl;                                      \
            xr += start;                                                                      \
            yr += start;                                                                      \
            int64_t j = 0;                                                                    \
            for (; j + 2 <= count; j += 2) NAME##_two4(m + (j / 2) * per, xr + 4 * j, yr + 4 * j); \
            if (j < count) NAME##_block4(m + (j / 2) * per, xr + 4 * j, yr + 4 * j);                \
        })                                                                                    \
    }                                                                                         \
                                                                                              \
    INLINE static void NAME##_matrices(const T *x, T *y, const int64_t *shape, const int64_t *xs,   \
                                const int64_t *ys, const int64_t *f, int64_t b0) {                        \
        int64_t start = f[1], count = f[2], size = f[3], per = f[7];                          \
        const T *table = (const T *)(intptr_t)f[4];                                           \
        EACH_ROW(T, {                                                                            \
            const T *m = table + (b + b0) * f[5] + l * f[6];                                  \
            T in[64];                                                                         \
            for (int64_t j = 0; j < count; j++) {                                             \
                const T *mj = m + j * per, *xb = xr + start + size * j;                       \
                T *yb = yr + start + size * j;                                                \
                memcpy(in, xb, (size_t)size * sizeof(T));                                     \
                for (int64_t r = 0; r < size; r++) {                                          \
                    T acc = mj[r] * in[0];                                                    \
                    for (int64_t c = 1; c < size; c++) acc = acc + mj[c * size + r] * in[c];  \
                    yb[r] = acc;                                                              \
                }                                                                             \
            }                                                                                 \
        })                                                                                    \
    }                                                                                         \
                                                                                              \
    INLINE static void NAME##_copy(const T *x, T *y, const int64_t *shape, const int64_t *xs,       \
                            const int64_t *ys, int64_t from) {                                \
        size_t bytes = (size_t)(shape[3] - from) * sizeof(T);                                 \
        EACH_ROW(T, { memcpy(yr + from, xr + from, bytes); })                                    \
    }                                                                                         \
                                                                                              \
    CLONES static void NAME##_apply(const T *x, T *y, const int64_t *shape, const int64_t *xs, \
                                    const int64_t *ys, const int64_t *spec, int64_t nspec,       \
                                    int64_t b0) {  \
        /* Section by section: each reads and writes its own channels of every row, so with \
         * sections on whole cache lines nothing is read twice. */                             \
        int64_t covered = 0;                                                                  \
        for (int64_t s = 0; s < nspec; s++) {                                                 \
            const int64_t *f = spec + s * FIELDS;                                             \
            if (f[0] == 0) {                                                                  \
                NAME##_rotations(x, y, shape, xs, ys, f, b0);                                     \
                covered = f[1] + 2 * f[2];                                                    \
            } else {                                                                          \
                if (f[3] == 4)                                                                \
                    NAME##_matrices4(x, y, shape, xs, ys, f, b0);                                 \
                else                                                                          \
                    NAME##_matrices(x, y, shape, xs, ys, f, b0);                                  \
                covered = f[1] + f[2] * f[3];                                                 \
            }                                                                                 \
        }                                                                                     \
        if (x != y && covered < shape[3]) NAME##_copy(x, y, shape, xs, ys, covered);          \
    }

DEFINE_KERNEL(f32, float, v8f, v8i)
DEFINE_KERNEL(f64, double, v8d, v8l)

/* apply(x, y, double, (B, H, L, D), x strides (B, H, L), y strides, spec, nspec, b0) with the
 * tensors given as addresses and strides in elements; the channel stride is 1. b0: the batch
 * index of x's first row in the tables (a slice of a batch, one thread's share). */
static PyObject *apply(PyObject *self, PyObject *args) {
    (void)self;
    long long x, y, spec, nspec, b0;
    int is_double;
    long long shape[4], xs[3], ys[3];
    if (!PyArg_ParseTuple(args, "LLp(LLLL)(LLL)(LLL)LLL", &x, &y, &is_double, &shape[0],
                          &shape[1], &shape[2], &shape[3], &xs[0], &xs[1], &xs[2], &ys[0],
                          &ys[1], &ys[2], &spec, &nspec, &b0))
        return NULL;
    int64_t shape64[4], xs64[3], ys64[3];
    for (int i = 0; i < 4; i++) shape64[i] = shape[i];
    for (int i = 0; i < 3; i++) {
        xs64[i] = xs[i];
        ys64[i] = ys[i];
    }
    const int64_t *fields = (const int64_t *)(intptr_t)spec;
    for (int64_t s = 0; s < nspec; s++) {
        int64_t size = fields[s * FIELDS + 3];
        if (fields[s * FIELDS] != 0 && (size < 1 || size > 64)) {
            PyErr_Format(PyExc_ValueError, "block size %lld is outside 1..64", (long long)size);
            return NULL;
        }
    }
    Py_BEGIN_ALLOW_THREADS;
    if (is_double)
        f64_apply((const double *)(intptr_t)x, (double *)(intptr_t)y, shape64, xs64, ys64,
                  fields, nspec, b0);
    else
        f32_apply((const float *)(intptr_t)x, (float *)(intptr_t)y, shape64, xs64, ys64,
                  fields, nspec, b0);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"apply", apply, METH_VARARGS, "Apply the sections of a GTA representation to a tensor."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_group_kernels",
    .m_doc = "One-pass GTA transforms (CPU).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__group_kernels(void) { return PyModule_Create(&module); }
