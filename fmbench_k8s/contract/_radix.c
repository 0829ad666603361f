/* The two passes of contract/stats.py's radix_percentiles over a stage's float32 ITL gaps, in C.
 *
 * Why: numpy's bincount first copies its uint16 keys to intp (8 bytes per value), and the gather
 * builds a bool mask with a fancy index and then a boolean index: four passes where one is enough.
 * Over the 10M-record analysis these two were a fifth of the time (docs/performance.md).
 *
 * A non-negative float32's bits, read as a uint32, sort as the float does; its top 16 bits are its
 * bucket. count_tops adds each value's bucket to a histogram; gather copies, in order, the values
 * whose bucket is marked. What the numbers mean stays in stats.py; tests/unit/test_stats_percentiles.py
 * holds them bit for bit to numpy's percentile.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define BUCKETS 65536

/* A C-contiguous float32 buffer, read-only. */
static int values_of(PyObject *obj, Py_buffer *view) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (view->itemsize != 4 || view->format == NULL || strcmp(view->format, "f")) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "values: a contiguous float32 array");
        return -1;
    }
    return 0;
}

static int writable(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) return -1;
    if (view->itemsize != itemsize) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "%s: a writable contiguous array of %zd-byte items", what, itemsize);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(count_tops_doc,
             "count_tops(values, counts)\n\n"
             "Adds each float32 value's top 16 bits to counts (int64, 65536 buckets).");

static PyObject *count_tops(PyObject *self, PyObject *args) {
    PyObject *values_obj, *counts_obj;
    Py_buffer values, counts;
    if (!PyArg_ParseTuple(args, "OO", &values_obj, &counts_obj)) return NULL;
    if (values_of(values_obj, &values) < 0) return NULL;
    if (writable(counts_obj, &counts, 8, "counts") < 0) {
        PyBuffer_Release(&values);
        return NULL;
    }
    if (counts.len != BUCKETS * 8) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&counts);
        PyErr_SetString(PyExc_ValueError, "counts: 65536 buckets");
        return NULL;
    }
    const uint32_t *v = values.buf;
    int64_t *c = counts.buf;
    Py_ssize_t n = values.len / 4;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < n; i++) c[v[i] >> 16]++;
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&values);
    PyBuffer_Release(&counts);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(gather_doc,
             "gather(values, wanted, out, at) -> int\n\n"
             "Copies, in order, the values whose top 16 bits are marked in wanted (65536 bytes) into\n"
             "out (float32) from index at; returns the index after the last one copied.");

static PyObject *gather(PyObject *self, PyObject *args) {
    PyObject *values_obj, *wanted_obj, *out_obj;
    Py_ssize_t at;
    Py_buffer values, wanted, out;
    if (!PyArg_ParseTuple(args, "OOOn", &values_obj, &wanted_obj, &out_obj, &at)) return NULL;
    if (values_of(values_obj, &values) < 0) return NULL;
    if (PyObject_GetBuffer(wanted_obj, &wanted, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&values);
        return NULL;
    }
    if (writable(out_obj, &out, 4, "out") < 0) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&wanted);
        return NULL;
    }
    PyObject *result = NULL;
    if (wanted.len != BUCKETS) {
        PyErr_SetString(PyExc_ValueError, "wanted: 65536 one-byte marks");
        goto done;
    }
    const uint32_t *v = values.buf;
    const uint8_t *w = wanted.buf;
    uint32_t *o = out.buf;
    Py_ssize_t n = values.len / 4, room = out.len / 4, i = 0, j = at;
    if (at < 0 || at > room) {
        PyErr_SetString(PyExc_ValueError, "at: outside out");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    for (; i < n && j < room; i++) {
        uint32_t x = v[i];
        o[j] = x;   /* written always, kept only when wanted: no branch to mispredict */
        j += w[x >> 16] != 0;
    }
    Py_END_ALLOW_THREADS;
    for (; i < n; i++) { /* out is full: any more marked value is more than the counts said */
        if (w[v[i] >> 16]) {
            PyErr_SetString(PyExc_ValueError, "out: too small for the marked values");
            goto done;
        }
    }
    result = PyLong_FromSsize_t(j);
done:
    PyBuffer_Release(&values);
    PyBuffer_Release(&wanted);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"count_tops", count_tops, METH_VARARGS, count_tops_doc},
    {"gather", gather, METH_VARARGS, gather_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_radix", NULL, -1, methods};

PyMODINIT_FUNC PyInit__radix(void) { return PyModule_Create(&module); }
