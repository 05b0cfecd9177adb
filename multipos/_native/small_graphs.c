/*
 * The per-graph Laplacian and magnetic Laplacian PEs of one unweighted graph of up to 96 nodes,
 * outside the eigensolver, in three calls instead of a few dozen array operations; and the
 * solver of the complex Hermitian problems of up to 96 nodes (hermitian_lowest, below).
 *
 * A PyG dataset calls its pre_transform once per graph; for molecule-sized graphs the cost of
 * the numpy path (multipos/graph/small.py) is the number of array operations, not the flops.
 * These loops perform the same IEEE operations in the same order as that path (integer edge
 * counts, the union max(a, a^T), degrees as exact integer sums, D^-1/2 = 1 / sqrt(d), the
 * entries -(d_i w_ij) d_j, the canonical sign or phase of each column), so the matrix handed
 * to the eigensolver (numpy.linalg.eigh for the real Laplacian, hermitian_lowest for the
 * magnetic one, on both paths) and the PE written from its result have the same bits as the
 * numpy path; tests/graph/test_small_kernels.py holds that. The build turns off contraction into
 * fused multiply-adds, which would change roundings.
 *
 *   adjacency(edge_index, n, a, deg) -> (status, one_way, max_union)
 *   laplacian(a, deg, lap)
 *   magnetic(a, deg, cos_t, sin_t, cos_mt, sin_mt, lap)
 *   laplacian_select(vals, vecs, deg, k, pe, values, mask)
 *   magnetic_select(vals, vecs, deg, k, real, imag, values, mask)
 *   hermitian_lowest(mat, vals, vecs) -> status
 *
 * Arrays come as buffers (C-contiguous: edge_index (2, E) int64, a (n, n) int64, deg (n,)
 * float64, lap (n, n) float64 or complex128, vals (n,), vecs (n, m) with column j the j-th
 * eigenvector, m = n for the real Laplacian); the outputs (n, k) float32 / bool come as
 * addresses of torch tensors.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* One copy of the solver for AVX2 machines, one for any x86-64; the same bits from both. */
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

/* The tie tolerance of the canonical sign / phase (multipos.graph.eigensolvers.TIE_TOL). */
#define TIE_TOL 1e-8

static double dinv_of(double d) { return d == 0.0 ? 0.0 : 1.0 / sqrt(d); }

static int64_t union_count(const int64_t *a, int64_t n, int64_t i, int64_t j) {
    int64_t x = a[i * n + j], y = a[j * n + i];
    return x > y ? x : y;
}

static int check(Py_buffer *buf, Py_ssize_t bytes, const char *name) {
    if (buf->len != bytes || !PyBuffer_IsContiguous(buf, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s: expected a contiguous buffer of %zd bytes, got %zd",
                     name, bytes, buf->len);
        return 0;
    }
    return 1;
}

/* Release the buffers an entry point took and return its result (NULL on error). */
static PyObject *release(PyObject *result, Py_buffer *a, Py_buffer *b, Py_buffer *c) {
    PyBuffer_Release(a);
    PyBuffer_Release(b);
    PyBuffer_Release(c);
    return result;
}

/* ---- The k lowest eigenpairs of a small Hermitian matrix --------------------------------
 *
 * For the magnetic Laplacian of a graph of up to 96 nodes, where only the K lowest
 * eigenvectors are kept: LAPACK's ?heevd computes all n of them and, at this size, spends
 * most of its time in call overheads. Here, in four steps of textbook numerical linear
 * algebra (Golub & Van Loan, "Matrix Computations", 4th ed., Sec. 8.3, 8.4, 8.2.2 / 5.1):
 *   1. Householder reduction A = Q T Q^H to a real symmetric tridiagonal T (the reflectors
 *      H = I - tau v v^H chosen so that H^H x = beta e_1 with beta real);
 *   2. every eigenvalue of T by the implicit QL iteration with Wilkinson's shift;
 *   3. the eigenvectors z of T for the `count` lowest eigenvalues by inverse iteration
 *      (LU with partial pivoting of T - lambda I, a fixed pseudo-random start, 3 steps) on
 *      the unreduced block of T each eigenvalue belongs to, each orthogonalised against
 *      the vectors of its block before it whose eigenvalues lie within 1e-3 ||T|| (a
 *      cluster; modified Gram-Schmidt before and after every solve);
 *   4. x = Q z, the reflectors applied in reverse order.
 * One thread, a fixed order of operations and no library calls: the same matrix gives the
 * same bits in any process, on any thread count, at any memory address. Column j depends
 * only on the columns before it, so asking for more columns leaves the first ones alone. */

typedef struct {
    double *ar, *ai; /* n x n, row-major, planar; the lower triangle holds the reflectors */
    double d[96], e[96], tau_r[96], tau_i[96];
} Reduction;

static void reflector(Reduction *w, int n, int j) {
    /* Reflector of column j below the diagonal, applied to the trailing block from both sides */
    int m = n - j - 1;
    double *col_r = w->ar + (j + 1) * n + j, *col_i = w->ai + (j + 1) * n + j;
    double a_r = col_r[0], a_i = col_i[0], tail = 0.0;
    for (int i = 1; i < m; i++) tail += col_r[i * n] * col_r[i * n] + col_i[i * n] * col_i[i * n];
    w->d[j] = w->ar[j * n + j];
    w->tau_r[j] = w->tau_i[j] = 0.0;
    if (tail == 0.0 && a_i == 0.0) {
        w->e[j] = a_r; /* already real and alone: H = I */
        return;
    }
    double norm = sqrt(a_r * a_r + a_i * a_i + tail);
    double beta = a_r >= 0.0 ? -norm : norm;
    double t_r = (beta - a_r) / beta, t_i = -a_i / beta;
    double den_r = a_r - beta, den = den_r * den_r + a_i * a_i;
    double s_r = den_r / den, s_i = -a_i / den; /* 1 / (alpha - beta) */
    double v_r[96], v_i[96], p_r[96], p_i[96];
    v_r[0] = 1.0;
    v_i[0] = 0.0;
    for (int i = 1; i < m; i++) {
        double x_r = col_r[i * n], x_i = col_i[i * n];
        v_r[i] = col_r[i * n] = x_r * s_r - x_i * s_i;
        v_i[i] = col_i[i * n] = x_r * s_i + x_i * s_r;
    }
    w->e[j] = beta;
    w->tau_r[j] = t_r;
    w->tau_i[j] = t_i;
    /* p = tau S v for the trailing block S (Hermitian, lower triangle read) */
    double *sr = w->ar + (j + 1) * n + (j + 1), *si = w->ai + (j + 1) * n + (j + 1);
    for (int i = 0; i < m; i++) p_r[i] = p_i[i] = 0.0;
    for (int i = 0; i < m; i++) {
        const double *row_r = sr + i * n, *row_i = si + i * n;
        double acc_r = row_r[i] * v_r[i], acc_i = row_r[i] * v_i[i];
        for (int k = 0; k < i; k++) {
            double x_r = row_r[k], x_i = row_i[k]; /* S_ik; S_ki is its conjugate */
            acc_r += x_r * v_r[k] - x_i * v_i[k];
            acc_i += x_r * v_i[k] + x_i * v_r[k];
            p_r[k] += x_r * v_r[i] + x_i * v_i[i];
            p_i[k] += x_r * v_i[i] - x_i * v_r[i];
        }
        p_r[i] += acc_r;
        p_i[i] += acc_i;
    }
    for (int i = 0; i < m; i++) {
        double x_r = p_r[i], x_i = p_i[i];
        p_r[i] = t_r * x_r - t_i * x_i;
        p_i[i] = t_r * x_i + t_i * x_r;
    }
    /* w = p - 1/2 tau (p^H v) v, then S -= v w^H + w v^H (lower triangle) */
    double h_r = 0.0, h_i = 0.0;
    for (int i = 0; i < m; i++) {
        h_r += p_r[i] * v_r[i] + p_i[i] * v_i[i];
        h_i += p_r[i] * v_i[i] - p_i[i] * v_r[i];
    }
    double c_r = -0.5 * (t_r * h_r - t_i * h_i), c_i = -0.5 * (t_r * h_i + t_i * h_r);
    for (int i = 0; i < m; i++) {
        p_r[i] += c_r * v_r[i] - c_i * v_i[i];
        p_i[i] += c_r * v_i[i] + c_i * v_r[i];
    }
    for (int i = 0; i < m; i++) {
        double *row_r = sr + i * n, *row_i = si + i * n;
        for (int k = 0; k <= i; k++) {
            row_r[k] -= (v_r[i] * p_r[k] + v_i[i] * p_i[k]) + (p_r[i] * v_r[k] + p_i[i] * v_i[k]);
            row_i[k] -= (v_i[i] * p_r[k] - v_r[i] * p_i[k]) + (p_i[i] * v_r[k] - p_r[i] * v_i[k]);
        }
    }
}

/* Every eigenvalue of the tridiagonal (d, e), ascending, into vals; 0 or -1 (no convergence) */
static int tridiagonal_values(const double *d0, const double *e0, int n, double *vals) {
    const double eps = 2.220446049250313e-16;
    double e[96];
    memcpy(vals, d0, (size_t)n * sizeof(double));
    memcpy(e, e0, (size_t)n * sizeof(double));
    e[n - 1] = 0.0;
    double *d = vals;
    for (int l = 0; l < n; l++) {
        int iter = 0, m;
        for (;;) {
            for (m = l; m < n - 1; m++)
                if (fabs(e[m]) <= eps * (fabs(d[m]) + fabs(d[m + 1]))) break;
            if (m == l) break;
            if (++iter > 60) return -1;
            double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            double r = sqrt(g * g + 1.0);
            g = d[m] - d[l] + e[l] / (g + (g >= 0.0 ? r : -r));
            double s = 1.0, c = 1.0, p = 0.0;
            int split = 0;
            for (int i = m - 1; i >= l; i--) {
                double f = s * e[i], b = c * e[i];
                e[i + 1] = r = sqrt(f * f + g * g);
                if (r == 0.0) { /* the matrix splits: restart on the smaller problem */
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    split = 1;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
            }
            if (split) continue;
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    for (int i = 1; i < n; i++) { /* insertion sort: n <= 96 */
        double v = d[i];
        int j = i - 1;
        for (; j >= 0 && d[j] > v; j--) d[j + 1] = d[j];
        d[j + 1] = v;
    }
    return 0;
}

/* z minus its components along the orthonormal `before` vectors (modified Gram-Schmidt) */
static void orthogonalize(double *z, int n, const double *const *before, int prior) {
    for (int q = 0; q < prior; q++) {
        const double *u = before[q];
        double dot = 0.0;
        for (int i = 0; i < n; i++) dot += u[i] * z[i];
        for (int i = 0; i < n; i++) z[i] -= dot * u[i];
    }
}

/* The unit eigenvector z of the unreduced tridiagonal (d, e) at lambda by inverse iteration,
 * orthogonal to the `prior` vectors `before` (n each) of its cluster. */
static void tridiagonal_vector(const double *d, const double *e, int n, double lambda,
                               double scale, const double *const *before, int prior,
                               unsigned seed, double *z) {
    double a[96], up[96], up2[96], low[96];
    unsigned char swapped[96];
    double tiny = 2.220446049250313e-16 * (scale > 0.0 ? scale : 1.0);
    for (int i = 0; i < n; i++) {
        a[i] = d[i] - lambda;
        up[i] = low[i] = i < n - 1 ? e[i] : 0.0;
        up2[i] = 0.0;
    }
    /* P (T - lambda I) = L U: row i of U is (a_i, up_i, up2_i) at columns i, i+1, i+2 */
    for (int i = 0; i < n - 1; i++) {
        if (fabs(a[i]) >= fabs(low[i])) {
            swapped[i] = 0;
            if (a[i] == 0.0) a[i] = tiny;
            low[i] /= a[i];
            a[i + 1] -= low[i] * up[i];
        } else {
            swapped[i] = 1;
            double mult = a[i] / low[i], next = a[i + 1];
            a[i] = low[i];
            a[i + 1] = up[i] - mult * next;
            if (i < n - 2) {
                up2[i] = up[i + 1];
                up[i + 1] = -mult * up2[i];
            }
            up[i] = next;
            low[i] = mult;
        }
    }
    if (a[n - 1] == 0.0) a[n - 1] = tiny;
    unsigned state = seed * 2654435761u + 12345u;
    for (int i = 0; i < n; i++) {
        state = state * 1103515245u + 12345u;
        z[i] = (double)(state >> 8) / 16777216.0 - 0.5;
    }
    for (int step = 0; step < 3; step++) {
        /* Orthogonal to the cluster before the solve too: a component along an earlier
         * vector is amplified as much as the wanted one, so it must enter at rounding size,
         * not be cancelled after (which leaves rounding noise of its size everywhere). */
        orthogonalize(z, n, before, prior);
        for (int i = 0; i < n - 1; i++) {
            if (swapped[i]) {
                double t = z[i];
                z[i] = z[i + 1];
                z[i + 1] = t - low[i] * z[i];
            } else {
                z[i + 1] -= low[i] * z[i];
            }
        }
        z[n - 1] /= a[n - 1];
        if (n > 1) z[n - 2] = (z[n - 2] - up[n - 2] * z[n - 1]) / a[n - 2];
        for (int i = n - 3; i >= 0; i--)
            z[i] = (z[i] - up[i] * z[i + 1] - up2[i] * z[i + 2]) / a[i];
        orthogonalize(z, n, before, prior);
        double norm = 0.0;
        for (int i = 0; i < n; i++) norm += z[i] * z[i];
        norm = sqrt(norm);
        for (int i = 0; i < n; i++) z[i] /= norm;
    }
}

/* vals (n) and the first `count` eigenvectors (n x count, interleaved complex) of the
 * Hermitian matrix `in` (n x n interleaved complex); 0, -1 (not finite) or -2 (no
 * convergence) */
CLONES static int lowest_eigenpairs(const double *in, int n, int count, double *vals,
                                    double *out) {
    for (int i = 0; i < 2 * n * n; i++)
        if (!isfinite(in[i])) return -1;
    Reduction *w = malloc(sizeof(Reduction));
    double *buf = malloc(sizeof(double) * (size_t)(2 * n * n + n * count));
    if (w == NULL || buf == NULL) {
        free(w);
        free(buf);
        return -3;
    }
    w->ar = buf;
    w->ai = buf + n * n;
    double *z = buf + 2 * n * n;
    for (int i = 0; i < n * n; i++) {
        w->ar[i] = in[2 * i];
        w->ai[i] = in[2 * i + 1];
    }
    for (int j = 0; j < n - 1; j++) reflector(w, n, j);
    w->d[n - 1] = w->ar[(n - 1) * n + n - 1];
    /* Split T where an off-diagonal is negligible (the QL test): each unreduced block gets its
     * own eigenvalues and eigenvectors (zero outside it), so vectors of different blocks are
     * exactly orthogonal however close their eigenvalues; inverse iteration on the whole T
     * would be dominated there by whichever block's pivot happened to be smallest. */
    const double eps = 2.220446049250313e-16;
    double scale = 0.0;
    for (int i = 0; i < n; i++) {
        double r = fabs(w->d[i]) + (i > 0 ? fabs(w->e[i - 1]) : 0.0) +
                   (i < n - 1 ? fabs(w->e[i]) : 0.0);
        if (r > scale) scale = r;
    }
    int block_of[96], first_of[97], blocks = 0, status = 0;
    first_of[0] = 0;
    for (int i = 0; i < n; i++) {
        block_of[i] = blocks;
        if (i == n - 1 || fabs(w->e[i]) <= eps * (fabs(w->d[i]) + fabs(w->d[i + 1]))) {
            w->e[i] = 0.0;
            first_of[++blocks] = i + 1;
        }
    }
    int order[96]; /* eigenvalue slots, ascending by value (ties: lower block first) */
    for (int b = 0; b < blocks && status == 0; b++)
        status = tridiagonal_values(w->d + first_of[b], w->e + first_of[b],
                                    first_of[b + 1] - first_of[b], vals + first_of[b]);
    if (status == 0) {
        for (int i = 0; i < n; i++) order[i] = i;
        for (int i = 1; i < n; i++) { /* insertion sort, stable: slot order breaks ties */
            int v = order[i], j = i - 1;
            for (; j >= 0 && vals[order[j]] > vals[v]; j--) order[j + 1] = order[j];
            order[j + 1] = v;
        }
        double sorted[96];
        for (int i = 0; i < n; i++) sorted[i] = vals[order[i]];
        for (int c = 0; c < count; c++) {
            int b = block_of[order[c]], lo = first_of[b], size = first_of[b + 1] - lo;
            /* earlier columns of the same block whose eigenvalues chain to this one within
             * 1e-3 ||T|| (a cluster) */
            const double *prior[96];
            int nprior = 0;
            double next = sorted[c];
            for (int q = c - 1; q >= 0; q--) {
                if (block_of[order[q]] != b) continue;
                if (next - sorted[q] > 1e-3 * scale) break;
                prior[nprior++] = z + (size_t)q * n + lo;
                next = sorted[q];
            }
            double *col = z + (size_t)c * n;
            memset(col, 0, (size_t)n * sizeof(double));
            tridiagonal_vector(w->d + lo, w->e + lo, size, sorted[c], scale, prior, nprior,
                               (unsigned)c, col + lo);
        }
        memcpy(vals, sorted, (size_t)n * sizeof(double));
        for (int c = 0; c < count; c++) {
            double y_r[96], y_i[96];
            for (int i = 0; i < n; i++) {
                y_r[i] = z[(size_t)c * n + i];
                y_i[i] = 0.0;
            }
            for (int j = n - 2; j >= 0; j--) { /* y = H_j y on rows j + 1.. */
                double t_r = w->tau_r[j], t_i = w->tau_i[j];
                if (t_r == 0.0 && t_i == 0.0) continue;
                int m = n - j - 1;
                const double *v_r = w->ar + (j + 1) * n + j, *v_i = w->ai + (j + 1) * n + j;
                double s_r = y_r[j + 1], s_i = y_i[j + 1]; /* v^H y, v_0 = 1 */
                for (int i = 1; i < m; i++) {
                    s_r += v_r[i * n] * y_r[j + 1 + i] + v_i[i * n] * y_i[j + 1 + i];
                    s_i += v_r[i * n] * y_i[j + 1 + i] - v_i[i * n] * y_r[j + 1 + i];
                }
                double f_r = t_r * s_r - t_i * s_i, f_i = t_r * s_i + t_i * s_r;
                y_r[j + 1] -= f_r;
                y_i[j + 1] -= f_i;
                for (int i = 1; i < m; i++) {
                    y_r[j + 1 + i] -= v_r[i * n] * f_r - v_i[i * n] * f_i;
                    y_i[j + 1 + i] -= v_r[i * n] * f_i + v_i[i * n] * f_r;
                }
            }
            for (int i = 0; i < n; i++) {
                out[2 * ((size_t)i * count + c)] = y_r[i];
                out[2 * ((size_t)i * count + c) + 1] = y_i[i];
            }
        }
    } else {
        status = -2;
    }
    free(buf);
    free(w);
    return status;
}

/* hermitian_lowest(mat (n, n) complex128, vals (n,), vecs (n, count) complex128) -> status */
static PyObject *hermitian_lowest(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer mb, vb, eb;
    if (!PyArg_ParseTuple(args, "y*w*w*", &mb, &vb, &eb)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = vb.len / (Py_ssize_t)sizeof(double);
    Py_ssize_t count = n ? eb.len / (Py_ssize_t)(2 * sizeof(double) * n) : 0;
    if (n < 1 || n > 96 || count < 1 || count > n) {
        PyErr_SetString(PyExc_ValueError, "need 1..96 nodes and 1..n columns");
        goto done;
    }
    if (!check(&mb, n * n * 2 * (Py_ssize_t)sizeof(double), "mat") ||
        !check(&eb, n * count * 2 * (Py_ssize_t)sizeof(double), "vecs"))
        goto done;
    int status;
    Py_BEGIN_ALLOW_THREADS;
    status = lowest_eigenpairs(mb.buf, (int)n, (int)count, vb.buf, eb.buf);
    Py_END_ALLOW_THREADS;
    result = PyLong_FromLong(status);
done:
    return release(result, &mb, &vb, &eb);
}

/* Edge counts a (self-loops dropped), integer union degrees; status -1 for an id outside
 * 0..n-1 (the caller's general path raises the error). one_way: unordered pairs joined in one
 * direction only; max_union: the largest union count (a repeated edge makes it > 1). */
static PyObject *adjacency(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer ei, ab, db;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y*nw*w*", &ei, &n, &ab, &db)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t edges = ei.len / (Py_ssize_t)(2 * sizeof(int64_t));
    if (!check(&ei, edges * 2 * (Py_ssize_t)sizeof(int64_t), "edge_index") ||
        !check(&ab, n * n * (Py_ssize_t)sizeof(int64_t), "a") ||
        !check(&db, n * (Py_ssize_t)sizeof(double), "deg"))
        goto done;
    const int64_t *src = ei.buf, *dst = src + edges;
    int64_t *a = ab.buf;
    double *deg = db.buf;
    memset(a, 0, (size_t)(n * n) * sizeof(int64_t));
    for (Py_ssize_t e = 0; e < edges; e++) {
        uint64_t u = (uint64_t)src[e], v = (uint64_t)dst[e];
        if (u >= (uint64_t)n || v >= (uint64_t)n) {
            result = Py_BuildValue("(iLL)", -1, 0LL, 0LL);
            goto done;
        }
        if (u != v) a[u * n + v] += 1;
    }
    long long one_way = 0, max_union = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t d = 0;
        for (Py_ssize_t j = 0; j < n; j++) {
            int64_t s = union_count(a, n, i, j);
            d += s;
            if (s > max_union) max_union = s;
            if (j > i && (a[i * n + j] > 0) != (a[j * n + i] > 0)) one_way++;
        }
        deg[i] = (double)d;
    }
    result = Py_BuildValue("(iLL)", 0, one_way, max_union);
done:
    return release(result, &ei, &ab, &db);
}

/* L = I - D^-1/2 A D^-1/2 of the union (entries -(d_i a_ij) d_j, diagonal 1, 3 if isolated). */
static PyObject *laplacian(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer ab, db, lb;
    if (!PyArg_ParseTuple(args, "y*y*w*", &ab, &db, &lb)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = db.len / (Py_ssize_t)sizeof(double);
    if (!check(&ab, n * n * (Py_ssize_t)sizeof(int64_t), "a") ||
        !check(&lb, n * n * (Py_ssize_t)sizeof(double), "lap"))
        goto done;
    const int64_t *a = ab.buf;
    const double *deg = db.buf;
    double *lap = lb.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        double di = dinv_of(deg[i]);
        for (Py_ssize_t j = 0; j < n; j++)
            lap[i * n + j] = -(di * (double)union_count(a, n, i, j)) * dinv_of(deg[j]);
        lap[i * n + i] = deg[i] == 0.0 ? 3.0 : 1.0;
    }
    result = Py_NewRef(Py_None);
done:
    return release(result, &ab, &db, &lb);
}

/* The magnetic Laplacian of the union: on a pair joined one way, w = a_sym e^{+-i theta}
 * (+ where the edge runs i -> j), elsewhere w = a_sym; entries -(d_i w_ij) d_j; the real
 * diagonal 1 (3 if isolated), the imaginary one -(d_i 0) d_i as the numpy path leaves it. */
static PyObject *magnetic(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer ab, db, lb;
    double cp, sp, cm, sm;
    if (!PyArg_ParseTuple(args, "y*y*ddddw*", &ab, &db, &cp, &sp, &cm, &sm, &lb)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = db.len / (Py_ssize_t)sizeof(double);
    if (!check(&ab, n * n * (Py_ssize_t)sizeof(int64_t), "a") ||
        !check(&lb, n * n * 2 * (Py_ssize_t)sizeof(double), "lap"))
        goto done;
    const int64_t *a = ab.buf;
    const double *deg = db.buf;
    double *lap = lb.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        double di = dinv_of(deg[i]);
        for (Py_ssize_t j = 0; j < n; j++) {
            int64_t x = a[i * n + j], y = a[j * n + i];
            double s = (double)(x > y ? x : y), w_re = s, w_im = 0.0;
            if ((x > 0) != (y > 0)) {
                w_re = s * (x > 0 ? cp : cm);
                w_im = s * (x > 0 ? sp : sm);
            }
            double dj = dinv_of(deg[j]);
            lap[2 * (i * n + j)] = -(di * w_re) * dj;
            lap[2 * (i * n + j) + 1] = -(di * w_im) * dj;
        }
        lap[2 * (i * n + i)] = deg[i] == 0.0 ? 3.0 : 1.0;
    }
    result = Py_NewRef(Py_None);
done:
    return release(result, &ab, &db, &lb);
}

/* Row of the first entry within TIE_TOL of the column's largest magnitude. */
static Py_ssize_t anchor_row(const double *mag, Py_ssize_t n) {
    double top = mag[0];
    for (Py_ssize_t i = 1; i < n; i++)
        if (mag[i] > top) top = mag[i];
    double bar = top - TIE_TOL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (mag[i] >= bar) return i;
    return 0;
}

static void fill_values(const double *vals, Py_ssize_t offset, Py_ssize_t n, Py_ssize_t k,
                        Py_ssize_t kv, float *values, unsigned char *mask) {
    for (Py_ssize_t c = 0; c < k; c++) {
        float v = c < kv ? (float)vals[offset + c] : 0.0f;
        unsigned char m = c < kv;
        for (Py_ssize_t i = 0; i < n; i++) {
            values[i * k + c] = v;
            mask[i * k + c] = m;
        }
    }
}

static Py_ssize_t isolated_count(const double *deg, Py_ssize_t n) {
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) count += deg[i] == 0.0;
    return count;
}

/* Columns offset.. of the real eigenvectors (offset = eigenvalues below 1e-9: one per
 * component), isolated rows zero, each column times the sign of its anchor entry. */
static PyObject *laplacian_select(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer vb, eb, db;
    Py_ssize_t k;
    unsigned long long pe_p, values_p, mask_p;
    if (!PyArg_ParseTuple(args, "y*y*y*nKKK", &vb, &eb, &db, &k, &pe_p, &values_p, &mask_p))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = db.len / (Py_ssize_t)sizeof(double);
    if (n > 96 || !check(&vb, n * (Py_ssize_t)sizeof(double), "vals") ||
        !check(&eb, n * n * (Py_ssize_t)sizeof(double), "vecs")) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "more than 96 nodes");
        goto done;
    }
    const double *vals = vb.buf, *vecs = eb.buf, *deg = db.buf;
    float *pe = (float *)(uintptr_t)pe_p;
    Py_ssize_t offset = 0, num_iso = isolated_count(deg, n);
    for (Py_ssize_t i = 0; i < n; i++) offset += vals[i] < 1e-9;
    Py_ssize_t kv = n - num_iso - offset;
    kv = kv < 0 ? 0 : (kv > k ? k : kv);
    double col[96], mag[96];
    for (Py_ssize_t c = 0; c < k; c++) {
        for (Py_ssize_t i = 0; i < n; i++) {
            col[i] = (c < kv && deg[i] != 0.0) ? vecs[i * n + offset + c] : 0.0;
            mag[i] = fabs(col[i]);
        }
        double sign = col[anchor_row(mag, n)] < 0 ? -1.0 : 1.0;
        for (Py_ssize_t i = 0; i < n; i++) pe[i * k + c] = (float)(col[i] * sign + 0.0);
    }
    fill_values(vals, offset, n, k, kv, (float *)(uintptr_t)values_p,
                (unsigned char *)(uintptr_t)mask_p);
    result = Py_NewRef(Py_None);
done:
    return release(result, &vb, &eb, &db);
}

/* The k lowest complex eigenvectors, isolated rows zero, each column turned so that its
 * anchor entry is real and positive: x * conj(u), u = x_anchor / |x_anchor|. */
static PyObject *magnetic_select(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer vb, eb, db;
    Py_ssize_t k;
    unsigned long long re_p, im_p, values_p, mask_p;
    if (!PyArg_ParseTuple(args, "y*y*y*nKKKK", &vb, &eb, &db, &k, &re_p, &im_p, &values_p,
                          &mask_p))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = db.len / (Py_ssize_t)sizeof(double);
    Py_ssize_t cols = n ? eb.len / (Py_ssize_t)(2 * sizeof(double) * n) : 0;
    Py_ssize_t kv = n - isolated_count(db.buf, n);
    kv = kv < 0 ? 0 : (kv > k ? k : kv);
    if (n > 96 || cols < kv || !check(&vb, n * (Py_ssize_t)sizeof(double), "vals") ||
        !check(&eb, n * cols * 2 * (Py_ssize_t)sizeof(double), "vecs")) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "more than 96 nodes or too few columns");
        goto done;
    }
    const double *vals = vb.buf, *vecs = eb.buf, *deg = db.buf;
    float *out_re = (float *)(uintptr_t)re_p, *out_im = (float *)(uintptr_t)im_p;
    double re[96], im[96], mag[96];
    for (Py_ssize_t c = 0; c < k; c++) {
        for (Py_ssize_t i = 0; i < n; i++) {
            int keep = c < kv && deg[i] != 0.0;
            re[i] = keep ? vecs[2 * (i * cols + c)] : 0.0;
            im[i] = keep ? vecs[2 * (i * cols + c) + 1] : 0.0;
            mag[i] = sqrt(re[i] * re[i] + im[i] * im[i]);
        }
        Py_ssize_t r = anchor_row(mag, n);
        double u_re = 1.0, u_im = 0.0;
        if (mag[r] > 0) {
            u_re = re[r] / mag[r];
            u_im = im[r] / mag[r];
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            out_re[i * k + c] = (float)((re[i] * u_re + im[i] * u_im) + 0.0);
            out_im[i * k + c] = (float)((im[i] * u_re - re[i] * u_im) + 0.0);
        }
    }
    fill_values(vals, 0, n, k, kv, (float *)(uintptr_t)values_p,
                (unsigned char *)(uintptr_t)mask_p);
    result = Py_NewRef(Py_None);
done:
    return release(result, &vb, &eb, &db);
}

static PyMethodDef methods[] = {
    {"adjacency", adjacency, METH_VARARGS, "Edge counts and union degrees of one graph."},
    {"laplacian", laplacian, METH_VARARGS, "Symmetric normalised Laplacian of the union."},
    {"magnetic", magnetic, METH_VARARGS, "Magnetic Laplacian of the union."},
    {"laplacian_select", laplacian_select, METH_VARARGS, "Laplacian PE from eigenpairs."},
    {"magnetic_select", magnetic_select, METH_VARARGS, "Magnetic PE from eigenpairs."},
    {"hermitian_lowest", hermitian_lowest, METH_VARARGS, "Lowest eigenpairs, Hermitian."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_small_graphs",
    .m_doc = "Per-graph PEs of small unweighted graphs, outside the eigensolver.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__small_graphs(void) { return PyModule_Create(&module); }
