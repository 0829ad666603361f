/* How many distinct strings an Arrow string array holds, for analysis/metrics.py's check that no
 * request was recorded twice.
 *
 * Why: Arrow's unique() copies every string into its memo table: 150 ns a string, a seventh of a
 * 10M-record analysis (docs/performance.md). Here each string's 64-bit hash goes into an
 * open-addressing set with its index, and the bytes themselves are compared when two hashes are
 * equal: the count is exact whatever the hash does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_bytes(const unsigned char *p, Py_ssize_t n) {
    uint64_t h = 0x243F6A8885A308D3ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, (size_t)n);
    h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 31);
}

/* Hashes are first scattered by their top bits into PARTS runs (sequential writes), and each run
 * then goes through a set small enough for the cache: one random access into an 8 MB table per
 * string cost ~120 ns at 500,000 strings, the partitioned passes ~15. */
#define PART_BITS 6
#define PARTS (1 << PART_BITS)

typedef struct {
    uint64_t hash;
    uint32_t index;
} Entry;

/* The distinct strings among off[0..length]; *bad = 1 when the offsets fall, 2 without memory. */
static Py_ssize_t count_distinct(const int32_t *off, const unsigned char *bytes, Py_ssize_t length, uint64_t *hashes,
                                 Entry *parted, int *bad) {
    Py_ssize_t starts[PARTS + 1] = {0}, fill[PARTS];
    for (Py_ssize_t i = 0; i < length; i++) {
        if (off[i + 1] < off[i]) { /* each string's bytes are off[i] .. off[i+1] */
            *bad = 1;
            return 0;
        }
        hashes[i] = hash_bytes(bytes + off[i], off[i + 1] - off[i]);
        starts[(hashes[i] >> (64 - PART_BITS)) + 1]++;
    }
    Py_ssize_t largest = 0;
    for (int p = 0; p < PARTS; p++) {
        if (starts[p + 1] > largest) largest = starts[p + 1];
        starts[p + 1] += starts[p];
        fill[p] = starts[p];
    }
    for (Py_ssize_t i = 0; i < length; i++) {
        Entry e = {hashes[i], (uint32_t)i};
        parted[fill[hashes[i] >> (64 - PART_BITS)]++] = e;
    }
    size_t size = 16;
    while (size < (size_t)largest * 2) size *= 2; /* at most half full: short probes */
    uint32_t *slots = malloc(size * sizeof *slots); /* index + 1 into parted; 0 is empty */
    if (slots == NULL) {
        *bad = 2;
        return 0;
    }
    Py_ssize_t distinct = 0;
    for (int p = 0; p < PARTS; p++) {
        memset(slots, 0, size * sizeof *slots);
        for (Py_ssize_t k = starts[p]; k < starts[p + 1]; k++) {
            uint64_t h = parted[k].hash;
            size_t at = (size_t)h & (size - 1);
            for (;;) {
                uint32_t slot = slots[at];
                if (slot == 0) {
                    slots[at] = (uint32_t)(k - starts[p] + 1);
                    distinct++;
                    break;
                }
                const Entry *seen = &parted[starts[p] + slot - 1];
                if (seen->hash == h) {
                    uint32_t i = parted[k].index, j = seen->index;
                    int32_t n = off[i + 1] - off[i];
                    if (off[j + 1] - off[j] == n && memcmp(bytes + off[j], bytes + off[i], (size_t)n) == 0) break;
                }
                at = (at + 1) & (size - 1);
            }
        }
    }
    free(slots);
    return distinct;
}

PyDoc_STRVAR(distinct_strings_doc,
             "distinct_strings(offsets, data, start, length) -> int\n\n"
             "The number of distinct values among the strings start .. start+length-1 of an Arrow\n"
             "string array without nulls, given its int32 offsets buffer and its data buffer.");

static PyObject *distinct_strings(PyObject *self, PyObject *args) {
    PyObject *offsets_obj, *data_obj;
    Py_ssize_t start, length;
    Py_buffer offsets, data;
    if (!PyArg_ParseTuple(args, "OOnn", &offsets_obj, &data_obj, &start, &length)) return NULL;
    if (PyObject_GetBuffer(offsets_obj, &offsets, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(data_obj, &data, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&offsets);
        return NULL;
    }
    PyObject *result = NULL;
    if (start < 0 || length < 0 || (start + length + 1) * 4 > offsets.len) {
        PyErr_SetString(PyExc_ValueError, "offsets: shorter than start + length + 1 int32 values");
        goto done;
    }
    const int32_t *off = (const int32_t *)offsets.buf + start;
    const unsigned char *bytes = data.buf;
    if (off[0] < 0 || off[length] < off[0] || off[length] > data.len) { /* the ends bound every string */
        PyErr_SetString(PyExc_ValueError, "offsets: outside the data buffer");
        goto done;
    }
    if (length > UINT32_MAX - 1) {
        PyErr_SetString(PyExc_ValueError, "length: more strings than the set indexes");
        goto done;
    }
    Py_ssize_t distinct = 0;
    int bad = 0;
    uint64_t *hashes = PyMem_Malloc(((size_t)length + 1) * sizeof *hashes);
    Entry *parted = PyMem_Malloc(((size_t)length + 1) * sizeof *parted);
    if (hashes == NULL || parted == NULL) {
        PyMem_Free(hashes);
        PyMem_Free(parted);
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    distinct = count_distinct(off, bytes, length, hashes, parted, &bad);
    Py_END_ALLOW_THREADS;
    PyMem_Free(hashes);
    PyMem_Free(parted);
    if (bad) {
        PyErr_SetString(bad == 1 ? PyExc_ValueError : PyExc_MemoryError,
                        bad == 1 ? "offsets: not ascending" : "no memory for a partition's set");
        goto done;
    }
    result = PyLong_FromSsize_t(distinct);
done:
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"distinct_strings", distinct_strings, METH_VARARGS, distinct_strings_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_distinct", NULL, -1, methods};

PyMODINIT_FUNC PyInit__distinct(void) { return PyModule_Create(&module); }
