/*
 * The per-graph Laplacian and magnetic Laplacian PEs of one unweighted graph of up to 96 nodes,
 * outside the eigensolver, in three calls instead of a few dozen array operations.
 *
 * A PyG dataset calls its pre_transform once per graph; for molecule-sized graphs the cost of
 * the numpy path (multipos/graph/small.py) is the number of array operations, not the flops.
 * These loops perform the same IEEE operations in the same order as that path (integer edge
 * counts, the union max(a, a^T), degrees as exact integer sums, D^-1/2 = 1 / sqrt(d), the
 * entries -(d_i w_ij) d_j, the canonical sign or phase of each column), so the matrix handed
 * to numpy.linalg.eigh and the PE written from its result have the same bits as the numpy
 * path; tests/graph/test_small_kernels.py holds that. The build turns off contraction into
 * fused multiply-adds, which would change roundings.
 *
 *   adjacency(edge_index, n, a, deg) -> (status, one_way, max_union)
 *   laplacian(a, deg, lap)
 *   magnetic(a, deg, cos_t, sin_t, cos_mt, sin_mt, lap)
 *   laplacian_select(vals, vecs, deg, k, pe, values, mask)
 *   magnetic_select(vals, vecs, deg, k, real, imag, values, mask)
 *
 * Arrays come as buffers (C-contiguous: edge_index (2, E) int64, a (n, n) int64, deg (n,)
 * float64, lap (n, n) float64 or complex128, vals (n,), vecs (n, n) with column j the j-th
 * eigenvector); the outputs (n, k) float32 / bool come as addresses of torch tensors.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

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
    PyBuffer_Release(&ei);
    PyBuffer_Release(&ab);
    PyBuffer_Release(&db);
    return result;
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
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&ab);
    PyBuffer_Release(&db);
    PyBuffer_Release(&lb);
    return result;
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
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&ab);
    PyBuffer_Release(&db);
    PyBuffer_Release(&lb);
    return result;
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
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&vb);
    PyBuffer_Release(&eb);
    PyBuffer_Release(&db);
    return result;
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
    if (n > 96 || !check(&vb, n * (Py_ssize_t)sizeof(double), "vals") ||
        !check(&eb, n * n * 2 * (Py_ssize_t)sizeof(double), "vecs")) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "more than 96 nodes");
        goto done;
    }
    const double *vals = vb.buf, *vecs = eb.buf, *deg = db.buf;
    float *out_re = (float *)(uintptr_t)re_p, *out_im = (float *)(uintptr_t)im_p;
    Py_ssize_t kv = n - isolated_count(deg, n);
    kv = kv < 0 ? 0 : (kv > k ? k : kv);
    double re[96], im[96], mag[96];
    for (Py_ssize_t c = 0; c < k; c++) {
        for (Py_ssize_t i = 0; i < n; i++) {
            int keep = c < kv && deg[i] != 0.0;
            re[i] = keep ? vecs[2 * (i * n + c)] : 0.0;
            im[i] = keep ? vecs[2 * (i * n + c) + 1] : 0.0;
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
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&vb);
    PyBuffer_Release(&eb);
    PyBuffer_Release(&db);
    return result;
}

static PyMethodDef methods[] = {
    {"adjacency", adjacency, METH_VARARGS, "Edge counts and union degrees of one graph."},
    {"laplacian", laplacian, METH_VARARGS, "Symmetric normalised Laplacian of the union."},
    {"magnetic", magnetic, METH_VARARGS, "Magnetic Laplacian of the union."},
    {"laplacian_select", laplacian_select, METH_VARARGS, "Laplacian PE from eigenpairs."},
    {"magnetic_select", magnetic_select, METH_VARARGS, "Magnetic PE from eigenpairs."},
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
