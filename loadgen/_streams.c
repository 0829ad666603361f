/* Token streams read in C: every response body in flight on one epoll set, read without Python.
 *
 * Why: under gevent each SSE event used to cost a Python callback, a recvmsg wrapper, the chunk
 * and SSE decoders and the event's handling, about 20 us of a worker's CPU per token. Here a
 * Reactor owns an epoll set of response sockets; the hub watches its one descriptor and calls
 * poll(), which reads every ready socket (recvmsg with the kernel's SO_TIMESTAMPNS stamp),
 * undoes the chunked framing, splits the SSE events and keeps each event's data with the stamp of
 * the recv that completed it, in flat buffers (no Python object per event). Python sees a stream
 * again when its body has ended (or failed), and then takes its events all at once.
 *
 * The decoders mean exactly what loadgen/sse.py's ChunkedDecoder and SseDecoder mean, with the
 * same error reasons (tests/unit/test_loadgen_fast_streams.py feeds both the same bytes).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RECV_SIZE 65536
#define MAX_LINE (1 << 24) /* loadgen/sse.py MAX_LINE */
#define MAX_SIZE_LINE 1024 /* a chunk-size line longer than this is not HTTP */
#define MAX_READY 256
#define MAX_HEADER 65536 /* httpclient.py MAX_HEADER */

enum { C_SIZE, C_DATA, C_DATA_END, C_TRAILER, C_DONE };

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int buf_add(Buf *b, const char *src, Py_ssize_t n) {
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        char *p = PyMem_Realloc(b->p, (size_t)cap);
        if (!p) {
            PyErr_NoMemory();
            return -1;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, (size_t)n);
    b->len += n;
    return 0;
}

static void buf_free(Buf *b) {
    PyMem_Free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

typedef struct {
    Py_ssize_t end;
    double stamp;
} Event;

typedef struct {
    PyObject_HEAD
    int fd;
    int jsonlines;
    char *token; /* the API's answer-token marker (Protocol.token_marker), or NULL */
    Py_ssize_t token_len;
    /* chunked framing */
    int cstate;
    Py_ssize_t left;
    Buf head; /* an unfinished chunk-size or trailer line, or a chunk's CRLF */
    /* SSE */
    Buf line;      /* the line being received */
    Buf data;      /* the data lines of the event being received, joined by \n */
    int data_lines; /* how many (an event of one empty data line is still an event) */
    /* events received and not yet taken: their data end to end in one buffer, and per event
     * where its data ends (-1: an answer token's event, which keeps only its stamp) */
    Buf data_of;
    Event *events;
    Py_ssize_t count, slots;
    /* the response head, when the stream starts at it (head=True): read until its blank line */
    int in_head;
    Buf resp_head;       /* the head's bytes, then what followed them */
    Py_ssize_t head_end; /* where the head's blank line starts; -1 until it has arrived */
    double first_byte;   /* the stamp of its first recv; -1 before */
    int body;            /* the body is decoded here (a chunked 200); else Python reads it */
    int finished; /* the body ended (or failed): nothing more will be read */
    PyObject *error; /* (reason, detail) or (errno,) once failed; NULL while fine */
    int watched;  /* in a Reactor's epoll set */
} Stream;

static int fail(Stream *s, const char *reason, PyObject *detail) {
    if (!detail) return -1;
    Py_XDECREF(s->error);
    s->error = Py_BuildValue("(sN)", reason, detail);
    s->finished = 1;
    return s->error ? 0 : -1;
}

static int fail_errno(Stream *s, int err) {
    Py_XDECREF(s->error);
    s->error = Py_BuildValue("(i)", err);
    s->finished = 1;
    return s->error ? 0 : -1;
}

static Py_ssize_t find(const char *p, Py_ssize_t n, const char *needle, Py_ssize_t k) {
    const char *at = k <= n ? memmem(p, (size_t)n, needle, (size_t)k) : NULL;
    return at ? at - p : -1;
}

static int at(const char *p, Py_ssize_t n, Py_ssize_t i, const char *word, Py_ssize_t k) {
    return i + k <= n && memcmp(p + i, word, (size_t)k) == 0;
}

/* An event whose JSON would say only "one answer token": an object, its brackets balanced, whose
 * delta opens with non-empty content (the marker, then not a closing quote) and that has no
 * usage, error or reasoning. Checked on the bytes: a key's quotes can only appear unescaped
 * outside strings. protocols.py's OpenAIChat uses this too; a property test holds it to decoding. */
static int just_a_token(const char *p, Py_ssize_t n, const char *token, Py_ssize_t k) {
    if (n < 2 || p[0] != '{' || p[n - 1] != '}' || k < 1) return 0;
    /* One pass: the brackets' balance, and at each quote the keys that rule a token out and the
     * marker's first place (the marker opens with a quote, as every key does). */
    Py_ssize_t braces = 0, brackets = 0, found = token[0] == '"' ? -1 : find(p, n, token, k);
    for (Py_ssize_t i = 0; i < n; i++) {
        switch (p[i]) {
        case '{': braces++; break;
        case '}': braces--; break;
        case '[': brackets++; break;
        case ']': brackets--; break;
        case '"':
            if (at(p, n, i, "\"usage\":{", 9) || at(p, n, i, "\"error\"", 7) || at(p, n, i, "\"reasoning", 10))
                return 0;
            if (found < 0 && at(p, n, i, token, k)) found = i;
            break;
        default: break;
        }
    }
    if (braces || brackets) return 0; /* cut short (or brackets in its text): decoding says which */
    return found > 0 && found + k < n && p[found + k] != '"';
}

static int emit(Stream *s, const char *p, Py_ssize_t n, double ts) {
    if (s->count == s->slots) {
        Py_ssize_t slots = s->slots ? s->slots * 2 : 64;
        Event *events = PyMem_Realloc(s->events, (size_t)slots * sizeof(Event));
        if (!events) {
            PyErr_NoMemory();
            return -1;
        }
        s->events = events;
        s->slots = slots;
    }
    Event *e = &s->events[s->count];
    if (s->token && just_a_token(p, n, s->token, s->token_len)) {
        e->end = -1;
    } else {
        if (buf_add(&s->data_of, p, n) < 0) return -1;
        e->end = s->data_of.len;
    }
    e->stamp = ts;
    s->count++;
    return 0;
}

static int starts(const char *p, Py_ssize_t n, const char *prefix) {
    Py_ssize_t k = (Py_ssize_t)strlen(prefix);
    return n >= k && memcmp(p, prefix, (size_t)k) == 0;
}

static int equals(const char *p, Py_ssize_t n, const char *word) {
    return n == (Py_ssize_t)strlen(word) && memcmp(p, word, (size_t)n) == 0;
}

/* SseParser.line */
static int sse_line(Stream *s, const char *p, Py_ssize_t n, double ts) {
    if (n == 0) {
        if (!s->data_lines) return 0;
        int rc = emit(s, s->data.p, s->data.len, ts);
        s->data.len = 0;
        s->data_lines = 0;
        return rc;
    }
    if (starts(p, n, "data:")) {
        Py_ssize_t skip = (n > 5 && p[5] == ' ') ? 6 : 5;
        if (s->data_lines && buf_add(&s->data, "\n", 1) < 0) return -1;
        s->data_lines++;
        return buf_add(&s->data, p + skip, n - skip);
    }
    if (p[0] == ':' || starts(p, n, "event:") || starts(p, n, "id:") || starts(p, n, "retry:") ||
        equals(p, n, "event") || equals(p, n, "id") || equals(p, n, "retry"))
        return 0;
    if (s->jsonlines && p[0] == '{') return emit(s, p, n, ts);
    PyObject *head = PyBytes_FromStringAndSize(p, n < 60 ? n : 60);
    if (!head) return -1;
    PyObject *detail = PyUnicode_FromFormat("not an SSE line: %R", head);
    Py_DECREF(head);
    return fail(s, "malformed_sse", detail);
}

/* LineSplitter.feed then SseParser.line for each complete line */
static int sse_feed(Stream *s, const char *p, Py_ssize_t n, double ts) {
    while (n > 0 && !s->finished) {
        const char *nl = memchr(p, '\n', (size_t)n);
        if (!nl) {
            if (buf_add(&s->line, p, n) < 0) return -1;
            if (s->line.len > MAX_LINE)
                return fail(s, "malformed_sse", PyUnicode_FromFormat("line longer than %d bytes", MAX_LINE));
            return 0;
        }
        Py_ssize_t k = nl - p;
        const char *lp = p;
        Py_ssize_t ln = k;
        if (s->line.len) {
            if (buf_add(&s->line, p, k) < 0) return -1;
            lp = s->line.p;
            ln = s->line.len;
        }
        if (ln && lp[ln - 1] == '\r') ln--;
        int rc = sse_line(s, lp, ln, ts);
        s->line.len = 0;
        if (rc < 0) return -1;
        p += k + 1;
        n -= k + 1;
    }
    return 0;
}

/* SseDecoder.finish: an unterminated last line, then an event without its blank line */
static int sse_finish(Stream *s, double ts) {
    Py_ssize_t n = s->line.len;
    while (n && s->line.p[n - 1] == '\r') n--;
    if (n) {
        int rc = sse_line(s, s->line.p, n, ts);
        if (rc < 0 || s->error) return rc;
    }
    s->line.len = 0;
    return sse_line(s, "", 0, ts);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

/* A chunk-size line (without its CRLF): the hex size before any ';' extension, spaces around it
 * allowed. Python's int(x, 16) in sse.py also takes a sign, a 0x prefix and underscores; no
 * server writes those, and here they are refused as a bad size. */
static int chunk_size(Stream *s, const char *p, Py_ssize_t n) {
    const char *semi = memchr(p, ';', (size_t)n);
    Py_ssize_t m = semi ? semi - p : n;
    Py_ssize_t a = 0, b = m;
    while (a < b && is_space(p[a])) a++;
    while (b > a && is_space(p[b - 1])) b--;
    Py_ssize_t size = 0;
    int ok = b > a && b - a <= 15;
    for (Py_ssize_t i = a; ok && i < b; i++) {
        int v = hexval(p[i]);
        if (v < 0) ok = 0;
        else size = size * 16 + v;
    }
    if (!ok) {
        PyObject *field = PyBytes_FromStringAndSize(p + a, (b - a) < 20 ? (b - a) : 20);
        if (!field) return -1;
        PyObject *detail = PyUnicode_FromFormat("bad chunk size %R", field);
        Py_DECREF(field);
        return fail(s, "malformed_http", detail);
    }
    s->left = size;
    s->cstate = size ? C_DATA : C_TRAILER;
    return 0;
}

/* ChunkedDecoder.feed; the body bytes go to the SSE decoder. */
static int chunked_feed(Stream *s, const char *p, Py_ssize_t n, double ts) {
    while (n > 0 && !s->finished) {
        switch (s->cstate) {
        case C_DATA: {
            Py_ssize_t take = s->left < n ? s->left : n;
            if (sse_feed(s, p, take, ts) < 0) return -1;
            p += take;
            n -= take;
            s->left -= take;
            if (!s->left) s->cstate = C_DATA_END;
            break;
        }
        case C_DATA_END: {
            Py_ssize_t take = 2 - s->head.len < n ? 2 - s->head.len : n;
            if (buf_add(&s->head, p, take) < 0) return -1;
            p += take;
            n -= take;
            if (s->head.len < 2) break;
            if (memcmp(s->head.p, "\r\n", 2) != 0)
                return fail(s, "malformed_http", PyUnicode_FromString("chunk not followed by CRLF"));
            s->head.len = 0;
            s->cstate = C_SIZE;
            break;
        }
        case C_SIZE:
        case C_TRAILER: {
            /* a line ends at CRLF, whose CR may end the previous piece; lf: the LF's place in p */
            Py_ssize_t lf;
            if (s->head.len && s->head.p[s->head.len - 1] == '\r' && p[0] == '\n') {
                lf = 0;
            } else {
                Py_ssize_t cr = find(p, n, "\r\n", 2);
                lf = cr < 0 ? -1 : cr + 1;
            }
            if (lf < 0) {
                if (buf_add(&s->head, p, n) < 0) return -1;
                if (s->cstate == C_SIZE && s->head.len > MAX_SIZE_LINE)
                    return fail(s, "malformed_http", PyUnicode_FromString("chunk size line too long"));
                return 0;
            }
            Py_ssize_t k = lf + 1; /* bytes of this piece up to and with the LF */
            if (buf_add(&s->head, p, k) < 0) return -1;
            p += k;
            n -= k;
            Py_ssize_t len = s->head.len - 2; /* without CRLF */
            if (s->cstate == C_SIZE) {
                if (chunk_size(s, s->head.p, len) < 0) return -1;
            } else if (len == 0) {
                s->cstate = C_DONE;
            }
            s->head.len = 0;
            break;
        }
        default: /* C_DONE: anything after the last chunk is not ours (no pipelining) */
            n = 0;
        }
        if (s->cstate == C_DONE && !s->finished) {
            if (sse_finish(s, ts) < 0) return -1;
            s->finished = 1;
        }
    }
    return 0;
}

static int lower_is(const char *p, Py_ssize_t n, const char *word) {
    return n == (Py_ssize_t)strlen(word) && strncasecmp(p, word, (size_t)n) == 0;
}
static int lower_has(const char *p, Py_ssize_t n, const char *word) {
    Py_ssize_t k = (Py_ssize_t)strlen(word);
    for (Py_ssize_t i = 0; i + k <= n; i++)
        if (strncasecmp(p + i, word, (size_t)k) == 0) return 1;
    return 0;
}
/* Is this head a 200 with a chunked body, by the same reading as httpclient.py's Response
 * (lines split at CRLF, a header's name stripped and lowered, "chunked" anywhere in its value)?
 * Only one Transfer-Encoding line is taken here: with several, Python reads the body, as it
 * decides. The status line must be "HTTP/1.1 200", then a reason or nothing. */
static int chunked_200(const char *p, Py_ssize_t n) {
    if (!starts(p, n, "HTTP/1.1 200") || (n > 12 && p[12] != ' ' && p[12] != '\r')) return 0;
    int lines = 0, chunked = 0;
    Py_ssize_t at = find(p, n, "\r\n", 2);
    while (at >= 0) {
        const char *line = p + at + 2;
        Py_ssize_t rest = n - at - 2, len = find(line, rest, "\r\n", 2);
        if (len < 0) len = rest;
        const char *colon = memchr(line, ':', (size_t)len);
        if (colon) {
            const char *a = line, *b = colon;
            while (a < b && is_space(*a)) a++;
            while (b > a && is_space(b[-1])) b--;
            if (lower_is(a, b - a, "transfer-encoding")) {
                lines++;
                chunked = lower_has(colon + 1, line + len - colon - 1, "chunked");
            }
        }
        at = len < rest ? at + 2 + len : -1;
    }
    return lines == 1 && chunked;
}
/* Response.read_head's part: the head up to its blank line; a chunked 200's body goes on here. */
static int head_feed(Stream *s, const char *p, Py_ssize_t n, double ts) {
    if (s->first_byte < 0) s->first_byte = ts;
    Py_ssize_t from = s->resp_head.len > 3 ? s->resp_head.len - 3 : 0;
    if (buf_add(&s->resp_head, p, n) < 0) return -1;
    Py_ssize_t end = find(s->resp_head.p + from, s->resp_head.len - from, "\r\n\r\n", 4);
    if (end < 0) {
        if (s->resp_head.len > MAX_HEADER)
            return fail(s, "malformed_http", PyUnicode_FromString("response headers too long"));
        return 0;
    }
    s->head_end = from + end;
    s->in_head = 0;
    if (!chunked_200(s->resp_head.p, s->head_end)) {
        s->finished = 1; /* Python parses the head and reads the rest */
        return 0;
    }
    s->body = 1;
    Py_ssize_t body = s->head_end + 4;
    return chunked_feed(s, s->resp_head.p + body, s->resp_head.len - body, ts);
}
static int stream_eof(Stream *s) {
    if (s->finished) return 0;
    if (s->in_head) /* before any byte: the server closed a kept-alive connection (Connection.request) */
        return fail(s, s->resp_head.len ? "malformed_http" : "connection_closed",
                    PyUnicode_FromString("closed in the headers"));
    return fail(s, "truncated_stream", PyUnicode_FromString("connection closed before the last chunk"));
}

/* One recvmsg on the stream's socket: its bytes, stamped with the kernel's arrival time. Returns
 * -1 on an error raised, 1 when more may be waiting, else 0: the reactor is edge-triggered, so it
 * reads again on 1. More may be waiting when the read filled the buffer or was interrupted, or,
 * with `drain` (epoll saw the peer close), when it got any bytes: a close queued behind them is
 * not a new arrival, so it must be read now. */
static int stream_read(Stream *s, int drain) {
    static char data[RECV_SIZE];
    char control[CMSG_SPACE(sizeof(struct timespec))];
    struct iovec iov = {data, sizeof(data)};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t got = recvmsg(s->fd, &msg, MSG_DONTWAIT);
    if (got < 0) {
        if (errno == EINTR) return 1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return fail_errno(s, errno);
    }
    double ts = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS &&
            c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
            struct timespec t;
            memcpy(&t, CMSG_DATA(c), sizeof(t));
            ts = (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
        }
    }
    if (ts < 0) { /* EOF, or data the kernel did not stamp */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        ts = (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
    }
    if (got == 0) return stream_eof(s);
    if ((s->in_head ? head_feed(s, data, got, ts) : chunked_feed(s, data, got, ts)) < 0) return -1;
    return drain || got == (ssize_t)sizeof(data);
}

static int Stream_init(Stream *s, PyObject *args, PyObject *kw) {
    static char *names[] = {"fd", "jsonlines", "token", "head", NULL};
    int jsonlines = 0, head = 0;
    const char *token = NULL;
    Py_ssize_t token_len = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|pz#p", names, &s->fd, &jsonlines, &token, &token_len, &head))
        return -1;
    s->jsonlines = jsonlines;
    s->in_head = head;
    s->head_end = -1;
    s->first_byte = -1;
    s->body = !head;
    PyMem_Free(s->token);
    s->token = NULL;
    if (token && token_len) {
        s->token = PyMem_Malloc((size_t)token_len);
        if (!s->token) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(s->token, token, (size_t)token_len);
        s->token_len = token_len;
    }
    return 0;
}

static void Stream_dealloc(Stream *s) {
    buf_free(&s->head);
    buf_free(&s->resp_head);
    buf_free(&s->line);
    buf_free(&s->data);
    buf_free(&s->data_of);
    PyMem_Free(s->events);
    PyMem_Free(s->token);
    Py_XDECREF(s->error);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *Stream_feed(Stream *s, PyObject *args) {
    Py_buffer b;
    double ts;
    if (!PyArg_ParseTuple(args, "y*d", &b, &ts)) return NULL;
    int rc = s->finished ? 0 : s->in_head ? head_feed(s, b.buf, b.len, ts) : chunked_feed(s, b.buf, b.len, ts);
    PyBuffer_Release(&b);
    if (rc < 0) return NULL;
    return PyBool_FromLong(s->finished);
}

static PyObject *Stream_eof(Stream *s, PyObject *unused) {
    if (stream_eof(s) < 0) return NULL;
    Py_RETURN_NONE;
}

/* The events received so far, in order: (data, stamp) for an event the protocol decodes, and
 * (None, stamps) for a run of answer tokens' events, their stamps as float64s end to end (one
 * Python call for the run instead of one per token). */
static PyObject *Stream_take(Stream *s, PyObject *unused) {
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i < s->count;) {
        Event *e = &s->events[i];
        PyObject *item;
        if (e->end < 0) {
            Py_ssize_t run = 1;
            while (i + run < s->count && s->events[i + run].end < 0) run++;
            PyObject *stamps = PyBytes_FromStringAndSize(NULL, run * (Py_ssize_t)sizeof(double));
            if (stamps) {
                double *at = (double *)PyBytes_AS_STRING(stamps);
                for (Py_ssize_t k = 0; k < run; k++) at[k] = s->events[i + k].stamp;
            }
            item = stamps ? Py_BuildValue("(ON)", Py_None, stamps) : NULL;
            i += run;
        } else { /* the buffer is NULL while every event so far was empty; y# would give None */
            PyObject *data = PyBytes_FromStringAndSize(s->data_of.p ? s->data_of.p + start : "", e->end - start);
            item = data ? Py_BuildValue("(Nd)", data, e->stamp) : NULL;
            start = e->end;
            i++;
        }
        if (!item || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    s->count = 0;
    s->data_of.len = 0;
    return out;
}

static PyObject *Stream_get_finished(Stream *s, void *unused) { return PyBool_FromLong(s->finished); }

static PyObject *Stream_get_error(Stream *s, void *unused) {
    if (!s->error) Py_RETURN_NONE;
    return Py_NewRef(s->error);
}

static PyObject *Stream_get_head(Stream *s, void *unused) {
    if (s->head_end < 0) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(s->resp_head.p, s->head_end);
}
static PyObject *Stream_get_rest(Stream *s, void *unused) {
    if (s->head_end < 0 || s->body) return PyBytes_FromStringAndSize("", 0);
    return PyBytes_FromStringAndSize(s->resp_head.p + s->head_end + 4, s->resp_head.len - s->head_end - 4);
}
static PyObject *Stream_get_first_byte(Stream *s, void *unused) {
    if (s->first_byte < 0) Py_RETURN_NONE;
    return PyFloat_FromDouble(s->first_byte);
}
static PyObject *Stream_get_body(Stream *s, void *unused) { return PyBool_FromLong(s->body); }
static PyMethodDef Stream_methods[] = {
    {"feed", (PyCFunction)Stream_feed, METH_VARARGS, "feed(data, ts) -> finished: body bytes read elsewhere"},
    {"eof", (PyCFunction)Stream_eof, METH_NOARGS, "the connection closed"},
    {"take", (PyCFunction)Stream_take, METH_NOARGS,
     "take() -> [(data, ts) | (None, stamps)]: the events so far; a run of answer tokens' as float64 stamps"},
    {NULL},
};

static PyGetSetDef Stream_getset[] = {
    {"finished", (getter)Stream_get_finished, NULL, "the body ended or failed", NULL},
    {"error", (getter)Stream_get_error, NULL, "(reason, detail), (errno,) or None", NULL},
    {"head", (getter)Stream_get_head, NULL, "head=True: the response head (without its blank line), or None", NULL},
    {"rest", (getter)Stream_get_rest, NULL, "head=True, body False: the bytes read after the head, for Python", NULL},
    {"first_byte", (getter)Stream_get_first_byte, NULL, "head=True: the stamp of the first byte, or None", NULL},
    {"body", (getter)Stream_get_body, NULL, "the body is decoded here (head=True: the head said chunked 200)", NULL},
    {NULL},
};

static PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fmbench_k8s.loadgen._streams.Stream",
    .tp_basicsize = sizeof(Stream),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Stream(fd, jsonlines=False, token=None, head=False): a chunked SSE response body, decoded as it "
              "arrives; head=True: the response's head first",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Stream_init,
    .tp_dealloc = (destructor)Stream_dealloc,
    .tp_methods = Stream_methods,
    .tp_getset = Stream_getset,
};

typedef struct {
    PyObject_HEAD
    int epfd;
    PyObject *watched; /* {Stream: on_finished} of the Streams in the epoll set (their references) */
} Reactor;

static int Reactor_init(Reactor *r, PyObject *args, PyObject *kw) {
    if (!PyArg_ParseTuple(args, "")) return -1;
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (r->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    r->watched = PyDict_New();
    return r->watched ? 0 : -1;
}

static void Reactor_dealloc(Reactor *r) {
    if (r->epfd >= 0) close(r->epfd);
    Py_XDECREF(r->watched);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static Stream *as_stream(PyObject *o) {
    if (!PyObject_TypeCheck(o, &StreamType)) {
        PyErr_SetString(PyExc_TypeError, "a Stream is expected");
        return NULL;
    }
    return (Stream *)o;
}

static PyObject *Reactor_add(Reactor *r, PyObject *args) {
    PyObject *o, *on_finished;
    if (!PyArg_ParseTuple(args, "OO", &o, &on_finished)) return NULL;
    Stream *s = as_stream(o);
    if (!s) return NULL;
    if (s->watched) Py_RETURN_NONE;
    /* Edge-triggered: a socket is reported once per arrival, so neither this set nor the hub's,
     * which holds this one's descriptor, polls again the sockets poll() has just emptied (a read
     * that returns less than its buffer leaves the socket empty). Data already waiting when the
     * stream is added is reported too. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = s};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    if (PyDict_SetItem(r->watched, o, on_finished) < 0) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        return NULL;
    }
    s->watched = 1;
    Py_RETURN_NONE;
}

static int unwatch(Reactor *r, Stream *s) {
    if (!s->watched) return 0;
    epoll_ctl(r->epfd, EPOLL_CTL_DEL, s->fd, NULL); /* the socket may be closed already */
    s->watched = 0;
    return PyDict_DelItem(r->watched, (PyObject *)s);
}

static PyObject *Reactor_remove(Reactor *r, PyObject *o) {
    Stream *s = as_stream(o);
    if (!s || unwatch(r, s) < 0) return NULL;
    Py_RETURN_NONE;
}

/* Read every ready stream to what the kernel holds (edge-triggered: Reactor_add); the streams
 * that finished (ended or failed) leave the set, then each one's on_finished(stream) is called.
 * A read that raises (out of memory) does not stop the others: under edge triggering a stream
 * reported now and not read would not be reported again. The first error is raised after the
 * calls, later ones are unraisable. The hub calls this directly (no Python frame per wake-up),
 * and the calls come after all the reads: a call switches to the request's greenlet, which may
 * add and remove streams before the hub resumes here. */
static PyObject *Reactor_poll(Reactor *r, PyObject *unused) {
    struct epoll_event ready[MAX_READY];
    PyObject *finished[MAX_READY][2]; /* (stream, on_finished), our references */
    int n = epoll_wait(r->epfd, ready, MAX_READY, 0);
    if (n < 0) {
        if (errno == EINTR) Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int k = 0, failed = 0;
    PyObject *type = NULL, *value = NULL, *tb = NULL; /* the first error, raised after the calls */
    for (int i = 0; i < n; i++) {
        Stream *s = ready[i].data.ptr;
        int drain = (ready[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
        int more, err = 0;
        do more = stream_read(s, drain);
        while (more > 0 && !s->finished);
        if (more < 0) {
            err = 1;
        } else if (s->finished) {
            PyObject *call = PyDict_GetItemWithError(r->watched, (PyObject *)s);
            if (call) {
                finished[k][0] = Py_NewRef((PyObject *)s);
                finished[k][1] = Py_NewRef(call);
                k++;
                err = unwatch(r, s) < 0;
            } else {
                err = PyErr_Occurred() != NULL; /* else no longer watched */
            }
        }
        if (err && !failed) {
            failed = 1;
            PyErr_Fetch(&type, &value, &tb);
        } else if (err) {
            PyErr_WriteUnraisable((PyObject *)r);
        }
    }
    for (int i = 0; i < k; i++) {
        PyObject *res = PyObject_CallOneArg(finished[i][1], finished[i][0]);
        if (res) {
            Py_DECREF(res);
        } else {
            PyErr_WriteUnraisable(finished[i][1]); /* one waiter's fault must not strand the others */
        }
        Py_DECREF(finished[i][0]);
        Py_DECREF(finished[i][1]);
    }
    if (failed) {
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Reactor_fileno(Reactor *r, PyObject *unused) { return PyLong_FromLong(r->epfd); }

static PyObject *Reactor_len(Reactor *r, PyObject *unused) { return PyLong_FromSsize_t(PyDict_GET_SIZE(r->watched)); }

static PyMethodDef Reactor_methods[] = {
    {"add", (PyCFunction)Reactor_add, METH_VARARGS,
     "add(stream, on_finished): read it in poll(); on_finished(stream) once it has ended or failed"},
    {"remove", (PyCFunction)Reactor_remove, METH_O, "remove(stream): stop reading it (on_finished is not called)"},
    {"poll", (PyCFunction)Reactor_poll, METH_NOARGS, "poll(): read the ready streams; call on_finished of the finished"},
    {"fileno", (PyCFunction)Reactor_fileno, METH_NOARGS, "the epoll descriptor (readable when a stream is)"},
    {"watching", (PyCFunction)Reactor_len, METH_NOARGS, "how many streams are in the set"},
    {NULL},
};

static PyTypeObject ReactorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fmbench_k8s.loadgen._streams.Reactor",
    .tp_basicsize = sizeof(Reactor),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Reactor(): an epoll set of Streams, read by poll()",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reactor_init,
    .tp_dealloc = (destructor)Reactor_dealloc,
    .tp_methods = Reactor_methods,
};

static PyObject *py_just_a_token(PyObject *unused, PyObject *args) {
    Py_buffer data, token;
    if (!PyArg_ParseTuple(args, "y*y*", &data, &token)) return NULL;
    int yes = just_a_token(data.buf, data.len, token.buf, token.len);
    PyBuffer_Release(&data);
    PyBuffer_Release(&token);
    return PyBool_FromLong(yes);
}

static PyMethodDef module_methods[] = {
    {"just_a_token", py_just_a_token, METH_VARARGS, "just_a_token(data, marker) -> bool: an answer token's event"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_streams", "Token streams read in C (see loadgen/_streams.c).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__streams(void) {
    if (PyType_Ready(&StreamType) < 0 || PyType_Ready(&ReactorType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Stream", (PyObject *)&StreamType) < 0 ||
        PyModule_AddObjectRef(m, "Reactor", (PyObject *)&ReactorType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
