/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the admin endpoint, HTTP/1.1 with JSON bodies, and /metrics.
 *
 * What: the admin API on the daemon's loop; the CLI's online commands are
 * its main client. Bodies are JSON; errors are {"error": "one line"}.
 *
 *   GET    /v1/volumes        200 [volume, ...] sorted by name
 *   POST   /v1/volumes        {"name", "size" (bytes), "compress": "lz4"|"none"}
 *                             201 volume (Location); 409 name taken; 507 too
 *                             large for the device; 400 bad name/size/JSON
 *   GET    /v1/volumes/NAME   200 volume; 404
 *   PUT    /v1/volumes/NAME   {"size"} 200 volume; 404; 507; 400; 409 when
 *                             shrinking a volume an NBD client is attached to
 *   DELETE /v1/volumes/NAME   200 {"name", "deleted": true}; 404; 409 in use
 *                             ?force=1 hangs up the volume's NBD clients
 *                             first (409 "try again" while their requests
 *                             are still in flight)
 *   GET    /v1/status         device, listeners, uptime, volumes, connections,
 *                             engine figures
 *   GET    /metrics           Prometheus text format 0.0.4
 *
 * A volume is {"name", "id", "size", "compress", "used", "lsn", "epoch",
 * "connections"}. HEAD works wherever GET does; other methods get 405 with
 * Allow. Malformed requests get 400 (431 for a request line and headers
 * over 16 KiB, 413 for a body over 64 KiB, 501 for Transfer-Encoding, 505
 * for other HTTP versions) and the connection is closed after the reply.
 *
 * Why this way: a small, strict parser of our own rather than a library:
 * one request at a time per connection, framed only by Content-Length.
 * The request line and headers are bounded (ADMIN_MAX_HEAD), the body is
 * bounded (ADMIN_MAX_BODY) before anything is buffered, and so is the
 * number of connections and the time a request may take to arrive. JSON
 * bodies are parsed by jansson. Each connection is an ordered state
 * machine (enum aconn_state): reading stops while a request is with the
 * engine or its reply is being written, so pipelined requests are answered
 * in order and a client that does not read cannot make us buffer without
 * bound. Volume operations are asynchronous; the reply goes out from the
 * engine's callback.
 *
 * Must never: trust a length or a name from the network before checking
 * it, block the loop, or free a connection anywhere but in the last of
 * its close callbacks (a connection is freed when both its handles are
 * closed and no engine operation still holds it: aconn.refs).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "internal.h"
#include "testudo/vtier.h"
#include "admin.h"

#define ADMIN_MAX_HEAD    (16u << 10)   /* request line and headers */
#define ADMIN_MAX_BODY    (64u << 10)
#define ADMIN_MAX_HEADERS 100
#define ADMIN_MAX_CONNS   256           /* beyond this, 503 and close */
#define ADMIN_IN_MIN      4096
#define ADMIN_IN_MAX      (ADMIN_MAX_HEAD + ADMIN_MAX_BODY + ADMIN_IN_MIN)
#define ADMIN_REQ_MS      30000         /* a request (or idle keep-alive, or a reply) */
#define ADMIN_LINGER_MS   2000          /* draining input after a final reply */

/* The endpoint: one per daemon, hung off d->admin_listener.data. */
struct admin {
	struct daemon *d;
	struct aconn *conns;        /* every connection not yet freed */
	unsigned nconns;
	bool shutting;              /* admin_shutdown() called */
	bool listener_closed;
	uint64_t requests, conns_total;
};

enum aconn_state {
	AS_HEAD,                    /* reading the request line and headers */
	AS_BODY,                    /* reading req.body_len bytes of body */
	AS_ENGINE,                  /* a volume operation is with the engine */
	AS_WRITING,                 /* the reply is being written */
	AS_LINGER,                  /* final reply sent, write side shut: draining input */
	AS_CLOSING,                 /* uv_close called; freed by the last callback */
};

enum vol_op { OP_NONE, OP_CREATE, OP_RESIZE, OP_DELETE, OP_PROMOTE, OP_VERIFY };

/*
 * One client connection. Invariants: reading is on only in AS_HEAD,
 * AS_BODY and AS_LINGER; in[0, in_len) are bytes read and not yet
 * consumed, the current request first.
 */
struct aconn {
	struct aconn *next, *prev;  /* admin.conns */
	struct admin *a;
	uv_tcp_t tcp;
	uv_timer_t timer;           /* request, idle, write and linger deadline */
	uv_shutdown_t shut;
	int refs;                   /* open handles + engine operations pending */
	int state;                  /* enum aconn_state */
	bool reading;
	char peer[64];

	char *in;
	size_t in_len, in_cap;

	/* the request being handled; offsets into in (it may move) */
	struct {
		char method[16];
		size_t target_off, target_len;
		size_t head_len;        /* request line + headers + blank line */
		size_t body_len;        /* Content-Length */
		int minor;              /* HTTP/1.<minor> */
		bool keep_alive;
		bool expect_continue, continue_sent;
		bool head_only;         /* HEAD: headers without the body */
	} req;

	/* the volume operation with the engine (AS_ENGINE) */
	int op;                     /* enum vol_op */
	char op_name[TDO_NAME_MAX + 1];
	uint64_t op_size;
	uint32_t op_flags;

	bool close_after;           /* the reply being written is the last */
};

struct wreq {
	uv_write_t req;
	struct aconn *c;
	bool final;                 /* the reply, not an interim 100 Continue */
	size_t len;
	char data[];
};

/* A growable string; oom is sticky and the text is then unusable. */
struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void conn_close(struct aconn *c);
static void conn_process(struct aconn *c);
static void read_on(struct aconn *c);

/* ---- small helpers ------------------------------------------------------- */

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		size_t room = b->cap - b->len;
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t ncap = b->cap ? b->cap * 2 : 4096;
		while (ncap - b->len <= (size_t)n)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
}

/* Microseconds as decimal seconds, exactly. */
static void sb_seconds(struct sbuf *b, uint64_t usec)
{
	sb_printf(b, "%" PRIu64 ".%06" PRIu64, usec / 1000000, usec % 1000000);
}

static const char *reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 417: return "Expectation Failed";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	case 507: return "Insufficient Storage";
	default: return "Unknown";
	}
}

static bool is_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Case-insensitive: does the header value list (comma-separated) hold TOKEN? */
static bool list_has(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token), i = 0;

	while (i < n) {
		size_t s, e;
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < n && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
			return true;
	}
	return false;
}

/* ---- connection lifetime -------------------------------------------------- */

static void admin_maybe_free(struct admin *a)
{
	if (a->shutting && a->listener_closed && a->nconns == 0) {
		a->d->admin_listener.data = NULL;
		free(a);
	}
}

static void conn_unref(struct aconn *c)
{
	struct admin *a = c->a;

	if (--c->refs > 0)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		a->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	a->nconns--;
	free(c->in);
	free(c);
	admin_maybe_free(a);
}

static void on_handle_closed(uv_handle_t *h)
{
	conn_unref(h->data);
}

static void conn_close(struct aconn *c)
{
	if (c->state == AS_CLOSING)
		return;
	c->state = AS_CLOSING;
	c->reading = false;
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

/* ---- replies ------------------------------------------------------------- */

static void read_on(struct aconn *c);
static void read_off(struct aconn *c);
static void on_timer(uv_timer_t *t);

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct aconn *c = req->data;

	if (c->state == AS_CLOSING)
		return;
	if (status < 0 || c->a->shutting) {
		conn_close(c);
		return;
	}
	/* let the client read the reply: drain what it still sends, then close */
	c->state = AS_LINGER;
	c->in_len = 0;
	uv_timer_start(&c->timer, on_timer, ADMIN_LINGER_MS, 0);
	read_on(c);
}

/* The reply has been written: go on to the next request, or finish. */
static void reply_written(struct aconn *c)
{
	if (c->state == AS_CLOSING)
		return;
	if (c->close_after) {
		c->shut.data = c;
		if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
			conn_close(c);
		return;
	}
	c->state = AS_HEAD;
	memset(&c->req, 0, sizeof c->req);
	uv_timer_start(&c->timer, on_timer, ADMIN_REQ_MS, 0);
	conn_process(c);
}

static void on_write(uv_write_t *req, int status)
{
	struct wreq *w = req->data;
	struct aconn *c = w->c;
	bool final = w->final;

	free(w);
	if (status < 0) {
		if (c->state != AS_CLOSING)
			tdo_log(TDO_LOG_DEBUG, "admin", "%s: write failed: %s", c->peer, uv_strerror(status));
		conn_close(c);
		return;
	}
	if (final)
		reply_written(c);
}

static int queue_write(struct aconn *c, const char *a, size_t alen, const char *b, size_t blen, bool final)
{
	struct wreq *w = malloc(sizeof *w + alen + blen);
	uv_buf_t buf;

	if (!w)
		return -ENOMEM;
	memcpy(w->data, a, alen);
	if (blen)
		memcpy(w->data + alen, b, blen);
	w->c = c;
	w->final = final;
	w->len = alen + blen;
	w->req.data = w;
	buf = uv_buf_init(w->data, (unsigned)w->len);
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) < 0) {
		free(w);
		return -EIO;
	}
	return 0;
}

/*
 * Send the reply to the current request: STATUS, content type, EXTRA
 * header lines (each ending in CRLF; may be NULL) and BODY (copied).
 * Reading stays off until it is written.
 */
static void send_reply(struct aconn *c, int status, const char *ctype, const char *extra,
                       const char *body, size_t blen)
{
	char date[64], hdr[768];
	time_t now = time(NULL);
	struct tm tm;
	int n;

	if (c->state == AS_CLOSING)
		return;
	if (!c->req.keep_alive || c->a->shutting)
		c->close_after = true;
	read_off(c);
	c->state = AS_WRITING;
	uv_timer_start(&c->timer, on_timer, ADMIN_REQ_MS, 0);
	gmtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	n = snprintf(hdr, sizeof hdr,
	             "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: testudod\r\nContent-Type: %s\r\n"
	             "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
	             status, reason(status), date, ctype, blen,
	             c->close_after ? "close" : "keep-alive", extra ? extra : "");
	if (n < 0 || (size_t)n >= sizeof hdr ||
	    queue_write(c, hdr, (size_t)n, body, c->req.head_only ? 0 : blen, true) < 0) {
		tdo_log(TDO_LOG_ERROR, "admin", "%s: cannot queue a reply", c->peer);
		conn_close(c);
	}
}

/* Send J (a reference is stolen) as the body, with a trailing newline. */
static void send_json(struct aconn *c, int status, const char *extra, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	if (!s) {
		static const char oom[] = "{\"error\":\"out of memory\"}\n";
		c->close_after = true;
		send_reply(c, 500, "application/json", NULL, oom, sizeof oom - 1);
		return;
	}
	size_t len = strlen(s);
	char *t = realloc(s, len + 2);
	if (t) {
		s = t;
		s[len++] = '\n';
		s[len] = 0;
	}
	send_reply(c, status, "application/json", extra, s, len);
	free(s);
}

/* {"error": MESSAGE}; EXTRA header lines as for send_reply(). */
static void send_error_hdr(struct aconn *c, int status, const char *extra, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void send_error_hdr(struct aconn *c, int status, const char *extra, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	send_json(c, status, extra, json_pack("{s:s}", "error", msg));
}
#define send_error(c, status, ...) send_error_hdr((c), (status), NULL, __VA_ARGS__)

/* A malformed request: answer and hang up, since its framing is lost. */
static void bad_request(struct aconn *c, int status, const char *msg)
{
	tdo_log(TDO_LOG_INFO, "admin", "%s: %d %s", c->peer, status, msg);
	c->close_after = true;
	send_error(c, status, "%s", msg);
}

static void send_interim_continue(struct aconn *c)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

	c->req.continue_sent = true;
	if (queue_write(c, cont, sizeof cont - 1, NULL, 0, false) < 0)
		conn_close(c);
}

static void on_timer(uv_timer_t *t)
{
	struct aconn *c = t->data;

	if ((c->state == AS_HEAD && c->in_len > 0) || c->state == AS_BODY) {
		c->req.keep_alive = false;
		bad_request(c, 408, "request not complete in time");
		/* the reply gets the linger's time, not another request's */
		uv_timer_start(&c->timer, on_timer, ADMIN_LINGER_MS, 0);
		return;
	}
	/* idle keep-alive, a reply nobody reads, or the linger is over */
	conn_close(c);
}

/* ---- reading and parsing --------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct aconn *c = h->data;

	(void)suggested;
	if (c->state == AS_LINGER)
		c->in_len = 0;          /* draining: everything is discarded */
	if (c->in_cap - c->in_len < ADMIN_IN_MIN && c->in_cap < ADMIN_IN_MAX) {
		size_t ncap = c->in_cap ? c->in_cap * 2 : ADMIN_IN_MIN;
		char *p;
		if (ncap > ADMIN_IN_MAX)
			ncap = ADMIN_IN_MAX;
		p = realloc(c->in, ncap);
		if (p) {
			c->in = p;
			c->in_cap = ncap;
		}
	}
	/* a zero-length buffer makes libuv report UV_ENOBUFS: we then close */
	*buf = uv_buf_init(c->in ? c->in + c->in_len : NULL, (unsigned)(c->in_cap - c->in_len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct aconn *c = s->data;

	(void)buf;
	if (nread == 0 || c->state == AS_CLOSING)
		return;
	if (nread < 0) {
		if (nread != UV_EOF && c->state != AS_LINGER)
			tdo_log(TDO_LOG_DEBUG, "admin", "%s: read: %s", c->peer, uv_strerror((int)nread));
		conn_close(c);
		return;
	}
	if (c->state == AS_LINGER)
		return;
	c->in_len += (size_t)nread;
	conn_process(c);
}

static void read_on(struct aconn *c)
{
	if (c->reading || c->state == AS_CLOSING)
		return;
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
		conn_close(c);
		return;
	}
	c->reading = true;
}

static void read_off(struct aconn *c)
{
	if (!c->reading)
		return;
	uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = false;
}

/* Drop the first N bytes of input (a handled request). */
static void consume(struct aconn *c, size_t n)
{
	memmove(c->in, c->in + n, c->in_len - n);
	c->in_len -= n;
	if (c->in_len == 0 && c->in_cap > ADMIN_IN_MIN) {
		free(c->in);            /* an idle connection keeps no big buffer */
		c->in = NULL;
		c->in_cap = 0;
	}
}

/*
 * The request line: METHOD SP TARGET SP HTTP/1.x, nothing else.
 * Returns 0, or an HTTP status with *why set.
 */
static int parse_request_line(struct aconn *c, const char *p, size_t n, const char **why)
{
	size_t i = 0, m;

	while (i < n && is_tchar((unsigned char)p[i]))
		i++;
	if (i == 0 || i >= n || p[i] != ' ') {
		*why = "malformed request line";
		return 400;
	}
	if (i >= sizeof c->req.method) {
		*why = "method not implemented";
		return 501;
	}
	memcpy(c->req.method, p, i);
	c->req.method[i] = 0;
	m = ++i;
	while (i < n && p[i] > 0x20 && p[i] < 0x7f)
		i++;
	if (i == m || i >= n || p[i] != ' ') {
		*why = "malformed request target";
		return 400;
	}
	if (p[m] != '/') {
		*why = "the request target must be an absolute path";
		return 400;
	}
	c->req.target_off = (size_t)(p - c->in) + m;
	c->req.target_len = i - m;
	i++;
	if (n - i == 8 && memcmp(p + i, "HTTP/1.", 7) == 0 && (p[i + 7] == '0' || p[i + 7] == '1')) {
		c->req.minor = p[i + 7] - '0';
		return 0;
	}
	if (n - i == 8 && memcmp(p + i, "HTTP/", 5) == 0 && p[i + 5] >= '0' && p[i + 5] <= '9' &&
	    p[i + 6] == '.' && p[i + 7] >= '0' && p[i + 7] <= '9') {
		*why = "only HTTP/1.0 and HTTP/1.1 are supported";
		return 505;
	}
	*why = "malformed HTTP version";
	return 400;
}

/*
 * Request line and headers, in[0, head_len), which ends with the blank
 * line. Fills c->req; returns 0, or an HTTP status with *why set.
 */
static int parse_head(struct aconn *c, const char **why)
{
	const char *p = c->in, *end = c->in + c->req.head_len - 2; /* the last CRLF */
	const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
	bool have_cl = false, conn_close_tok = false, conn_keep = false;
	int host = 0, nhdr = 0, st;

	st = parse_request_line(c, p, (size_t)(eol - p), why);
	if (st)
		return st;
	for (p = eol + 2; p < end; p = eol + 2) {
		const char *name = p, *v, *ve;
		size_t nlen;

		eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		if (++nhdr > ADMIN_MAX_HEADERS) {
			*why = "too many header fields";
			return 431;
		}
		while (p < eol && is_tchar((unsigned char)*p))
			p++;
		nlen = (size_t)(p - name);
		if (nlen == 0 || p == eol || *p != ':') {
			*why = "malformed header field";
			return 400;
		}
		v = p + 1;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		ve = eol;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		for (const char *q = v; q < ve; q++) {
			unsigned char ch = (unsigned char)*q;
			if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
				*why = "control character in a header field";
				return 400;
			}
		}
#define IS(h) (nlen == sizeof(h) - 1 && strncasecmp(name, h, nlen) == 0)
		if (IS("Content-Length")) {
			uint64_t len = 0;
			if (have_cl || v == ve) {
				*why = have_cl ? "more than one Content-Length" : "empty Content-Length";
				return 400;
			}
			have_cl = true;
			for (const char *q = v; q < ve; q++) {
				if (*q < '0' || *q > '9') {
					*why = "malformed Content-Length";
					return 400;
				}
				len = len * 10 + (uint64_t)(*q - '0');
				if (len > ADMIN_MAX_BODY) {
					*why = "request body larger than 64 KiB";
					return 413;
				}
			}
			c->req.body_len = (size_t)len;
		} else if (IS("Transfer-Encoding")) {
			*why = "Transfer-Encoding is not supported; send a Content-Length";
			return 501;
		} else if (IS("Connection")) {
			conn_close_tok |= list_has(v, (size_t)(ve - v), "close");
			conn_keep |= list_has(v, (size_t)(ve - v), "keep-alive");
		} else if (IS("Expect")) {
			if ((size_t)(ve - v) != 12 || strncasecmp(v, "100-continue", 12) != 0) {
				*why = "unsupported expectation";
				return 417;
			}
			c->req.expect_continue = true;
		} else if (IS("Host")) {
			host++;
		}
#undef IS
	}
	if (c->req.minor == 1 && host != 1) {
		*why = host ? "more than one Host header" : "missing Host header";
		return 400;
	}
	c->req.keep_alive = c->req.minor == 1 ? !conn_close_tok : conn_keep && !conn_close_tok;
	return 0;
}

/* Does the query string Q (LEN bytes, no '?') hold the parameter PARAM exactly? */
static bool query_has(const char *q, size_t len, const char *param)
{
	size_t pl = strlen(param);

	while (len) {
		const char *amp = memchr(q, '&', len);
		size_t n = amp ? (size_t)(amp - q) : len;
		if (n == pl && memcmp(q, param, pl) == 0)
			return true;
		if (!amp)
			break;
		len -= n + 1;
		q = amp + 1;
	}
	return false;
}

static void dispatch(struct aconn *c);

/* Parse and answer what the input holds, in order, one request at a time. */
static void conn_process(struct aconn *c)
{
	const char *why = NULL;
	int st;

	if (c->state == AS_HEAD) {
		char *hend;
		size_t skip = 0;

		/* a robust server ignores empty lines before a request (RFC 9112 2.2) */
		while (c->in_len - skip >= 2 && c->in[skip] == '\r' && c->in[skip + 1] == '\n' && skip < 64)
			skip += 2;
		if (skip)
			consume(c, skip);
		if (c->in_len == 0) {
			read_on(c);
			return;
		}
		hend = memmem(c->in, c->in_len < ADMIN_MAX_HEAD ? c->in_len : ADMIN_MAX_HEAD, "\r\n\r\n", 4);
		if (!hend) {
			if (c->in_len >= ADMIN_MAX_HEAD) {
				bad_request(c, 431, "request line and headers larger than 16 KiB");
				return;
			}
			/* a request that cannot be HTTP is refused at once: a method
			 * is a token, and a complete request line must parse */
			size_t k = 0;
			while (k < c->in_len && k < sizeof c->req.method && is_tchar((unsigned char)c->in[k]))
				k++;
			if (k < c->in_len && k < sizeof c->req.method && (k == 0 || c->in[k] != ' ') &&
			    c->in[0] != '\r') {
				bad_request(c, 400, "malformed request line");
				return;
			}
			char *eol = memmem(c->in, c->in_len, "\r\n", 2);
			if (eol && (st = parse_request_line(c, c->in, (size_t)(eol - c->in), &why))) {
				bad_request(c, st, why);
				return;
			}
			if (!eol && memchr(c->in, '\n', c->in_len)) {
				bad_request(c, 400, "lines must end with CRLF");
				return;
			}
			read_on(c);
			return;
		}
		c->req.head_len = (size_t)(hend - c->in) + 4;
		st = parse_head(c, &why);
		if (st) {
			bad_request(c, st, why);
			return;
		}
		c->state = AS_BODY;
	}
	if (c->state == AS_BODY) {
		if (c->in_len - c->req.head_len < c->req.body_len) {
			if (c->req.expect_continue && !c->req.continue_sent)
				send_interim_continue(c);
			read_on(c);
			return;
		}
		uv_timer_stop(&c->timer);
		c->a->requests++;
		dispatch(c);
		consume(c, c->req.head_len + c->req.body_len);
	}
}

/* ---- volumes --------------------------------------------------------------- */

static json_t *vol_json(struct daemon *d, const struct tdo_vol_info *vi)
{
	return json_pack("{s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:i}",
	                 "name", vi->name,
	                 "id", (json_int_t)vi->id,
	                 "size", (json_int_t)vi->size,
	                 "compress", vi->flags & TDO_VOL_LZ4 ? "lz4" : "none",
	                 "used", (json_int_t)vi->used_bytes,
	                 "lsn", (json_int_t)vi->lsn,
	                 "epoch", (json_int_t)vi->epoch,
	                 "connections", nbd_conn_count(d, vi->name));
}

static const char *op_verb(int op)
{
	switch (op) {
	case OP_CREATE: return "create";
	case OP_RESIZE: return "resize";
	case OP_DELETE: return "delete";
	default: return "look up";
	}
}

/*
 * The one place an engine or errno code becomes an HTTP status and a
 * message for the client. The cause is logged for the operator. The
 * operation is c->op on volume c->op_name (size c->op_size).
 */
static void reply_failure(struct aconn *c, int err)
{
	struct daemon *d = c->a->d;
	const char *name = c->op_name;
	char msg[400], a[32], b[32];
	int status, n;

	switch (err) {
	case TDO_ENOVOL:
		status = 404;
		snprintf(msg, sizeof msg, "no volume named '%s'", name);
		break;
	case TDO_EVOLEXIST:
		status = 409;
		snprintf(msg, sizeof msg, "a volume named '%s' already exists", name);
		break;
	case TDO_ENOSPACE: {
		struct tdo_engine_stats st;
		uint64_t room = 0;
		tdo_engine_stats(d->engine, &st);
		if (st.capacity > st.vol_bytes)
			room = st.capacity - st.vol_bytes;
		status = 507;
		if (c->op == OP_RESIZE)
			snprintf(msg, sizeof msg,
			         "not enough space on the device to resize volume '%s' to %s (room for %s more)",
			         name, tdo_format_size(c->op_size, a, sizeof a), tdo_format_size(room, b, sizeof b));
		else
			snprintf(msg, sizeof msg,
			         "not enough space on the device for volume '%s' of %s (room for %s)",
			         name, tdo_format_size(c->op_size, a, sizeof a), tdo_format_size(room, b, sizeof b));
		break;
	}
	case -ENOSPC:
		status = 507;
		snprintf(msg, sizeof msg, "the device holds as many volumes as it can (%u)", TDO_MAX_VOLS);
		break;
	case -EBUSY:
		status = 409;
		n = nbd_conn_count(d, name);
		if (n > 0)
			snprintf(msg, sizeof msg, "volume '%s' is in use (%d NBD connection%s attached)",
			         name, n, n == 1 ? "" : "s");
		else
			snprintf(msg, sizeof msg, "volume '%s' is in use (requests in flight); try again", name);
		break;
	case -EINVAL:
		status = 400;
		snprintf(msg, sizeof msg, "invalid volume name or size for '%s'", name);
		break;
	case -ESHUTDOWN:
		status = 503;
		snprintf(msg, sizeof msg, "testudod is shutting down");
		break;
	case -ENOMEM:
		status = 503;
		snprintf(msg, sizeof msg, "testudod is out of memory");
		break;
	case TDO_EPOISON:
		status = 500;
		snprintf(msg, sizeof msg, "the engine stopped after a failed device write; see the daemon's log");
		break;
	default:
		status = 500;
		snprintf(msg, sizeof msg, "%s", tdo_strerror(err));
		break;
	}
	tdo_log(status >= 500 ? TDO_LOG_ERROR : TDO_LOG_INFO, "admin", "%s: %s volume %s: %s (%d): %d %s",
	        c->peer, op_verb(c->op), name, tdo_strerror(err), err, status, reason(status));
	send_error(c, status, "%s", msg);
}

/* Reply with volume NAME as it is now. */
static void reply_volume(struct aconn *c, int status, const char *name)
{
	struct tdo_vol_info vi;
	char loc[128];
	int err = tdo_vol_lookup(c->a->d->engine, name, &vi);

	if (err) {
		reply_failure(c, err);
		return;
	}
	snprintf(loc, sizeof loc, "Location: /v1/volumes/%s\r\n", vi.name);
	send_json(c, status, status == 201 ? loc : NULL, vol_json(c->a->d, &vi));
}

static void on_vol_op_done(void *arg, int status)
{
	struct aconn *c = arg;
	char a[32];

	if (status == 0)
		tdo_log(TDO_LOG_INFO, "admin", "%s volume %s%s%s", c->op == OP_CREATE ? "created" :
		        c->op == OP_RESIZE ? "resized" : "deleted", c->op_name,
		        c->op == OP_DELETE ? "" : ", ",
		        c->op == OP_DELETE ? "" : tdo_format_size(c->op_size, a, sizeof a));
	if (c->state == AS_CLOSING) {  /* the client went away meanwhile */
		if (status)
			tdo_log(TDO_LOG_ERROR, "admin", "%s volume %s: %s", op_verb(c->op), c->op_name,
			        tdo_strerror(status));
		conn_unref(c);
		return;
	}
	c->refs--;                      /* both handles are still open */
	if (status)
		reply_failure(c, status);
	else if (c->op == OP_DELETE)
		send_json(c, 200, NULL, json_pack("{s:s, s:b}", "name", c->op_name, "deleted", 1));
	else
		reply_volume(c, c->op == OP_CREATE ? 201 : 200, c->op_name);
	c->op = OP_NONE;
}

/* Hand the operation in c->op to the engine; the reply goes out from its callback. */
static void start_vol_op(struct aconn *c)
{
	struct daemon *d = c->a->d;
	int err;

	c->refs++;
	c->state = AS_ENGINE;
	read_off(c);
	switch (c->op) {
	case OP_CREATE:
		err = tdo_vol_create(d->engine, c->op_name, c->op_size, c->op_flags, on_vol_op_done, c);
		break;
	case OP_RESIZE:
		err = tdo_vol_resize(d->engine, c->op_name, c->op_size, on_vol_op_done, c);
		break;
	default:
		err = tdo_vol_delete(d->engine, c->op_name, on_vol_op_done, c);
		/* no connection is attached and none can attach now: drop its figures */
		if (!err)
			met_forget(&d->met, c->op_name);
		break;
	}
	if (err) {
		c->refs--;
		reply_failure(c, err);
		c->op = OP_NONE;
	}
}

/* ---- volumes of a cluster (the volume tier) ---------------------------------- */

/* A volume tier error as an HTTP status. */
static int vt_http_status(int err)
{
	switch (err) {
	case TDO_ENOVOL: return 404;
	case TDO_EVOLEXIST: case -EALREADY: case -EBUSY: return 409;
	case -EINVAL: return 400;
	case TDO_ENOSPACE: case -ENOSPC: return 507;
	case -ETIMEDOUT: return 504;
	case -EAGAIN: case -ENOTCONN: case -ESHUTDOWN: case -ENOMEM: return 503;
	default: return 500;
	}
}

static void vt_reply_error(struct aconn *c, int err, const char *msg)
{
	int status = vt_http_status(err);
	tdo_log(status >= 500 ? TDO_LOG_WARN : TDO_LOG_INFO, "admin", "%s: %s volume %s: %s: %d %s", c->peer,
	        c->op == OP_PROMOTE ? "promote" : c->op == OP_VERIFY ? "verify" : op_verb(c->op), c->op_name,
	        msg && *msg ? msg : tdo_strerror(err), status, reason(status));
	send_error(c, status, "%s", msg && *msg ? msg : tdo_strerror(err));
}

static void on_vt_done(void *arg, int status, const char *msg, json_t *result)
{
	struct aconn *c = arg;

	if (c->state == AS_CLOSING) {  /* the client went away meanwhile */
		json_decref(result);
		conn_unref(c);
		return;
	}
	c->refs--;
	if (status && !(c->op == OP_VERIFY && result)) {
		json_decref(result);
		vt_reply_error(c, status, msg);
	}
	else if (c->op == OP_DELETE)
		send_json(c, 200, NULL, json_pack("{s:s, s:b}", "name", c->op_name, "deleted", 1));
	else {
		char loc[128];
		snprintf(loc, sizeof loc, "Location: /v1/volumes/%s\r\n", c->op_name);
		if (!result)
			result = json_pack("{s:s}", "name", c->op_name);
		send_json(c, c->op == OP_CREATE ? 201 : 200, c->op == OP_CREATE ? loc : NULL, result);
	}
	c->op = OP_NONE;
}

/* Hand c->op to the volume tier; the reply goes out from on_vt_done. */
static void start_vt_op(struct aconn *c, int replicas, const char *primary, const char *node)
{
	struct daemon *d = c->a->d;
	char err[256] = "";
	int rc;

	c->refs++;
	c->state = AS_ENGINE;
	read_off(c);
	switch (c->op) {
	case OP_CREATE:
		rc = tdo_vtier_create(d->vtier, c->op_name, c->op_size, c->op_flags, replicas, primary, on_vt_done, c,
		                      err, sizeof err);
		break;
	case OP_RESIZE:
		rc = tdo_vtier_resize(d->vtier, c->op_name, c->op_size, on_vt_done, c, err, sizeof err);
		break;
	case OP_PROMOTE:
		rc = tdo_vtier_promote(d->vtier, c->op_name, node, on_vt_done, c, err, sizeof err);
		break;
	case OP_VERIFY:
		rc = tdo_vtier_verify(d->vtier, c->op_name, on_vt_done, c, err, sizeof err);
		break;
	default:
		rc = tdo_vtier_delete(d->vtier, c->op_name, on_vt_done, c, err, sizeof err);
		if (!rc)
			met_forget(&d->met, c->op_name);
		break;
	}
	if (rc) {
		c->refs--;
		vt_reply_error(c, rc, err);
		c->op = OP_NONE;
	}
}

/*
 * The JSON object in the request body, with only the keys in ALLOWED (a
 * NULL-terminated list). NULL after a 400 was sent.
 */
static json_t *body_object(struct aconn *c, const char *const *allowed)
{
	json_error_t je;
	json_t *j, *v;
	const char *key;

	if (c->req.body_len == 0) {
		send_error(c, 400, "the request needs a JSON object body");
		return NULL;
	}
	j = json_loadb(c->in + c->req.head_len, c->req.body_len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		send_error(c, 400, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		send_error(c, 400, "the request body must be a JSON object");
		return NULL;
	}
	json_object_foreach(j, key, v) {
		bool ok = false;
		for (const char *const *k = allowed; *k; k++)
			ok |= strcmp(key, *k) == 0;
		if (!ok) {
			send_error(c, 400, "unknown field '%.64s'", key);
			json_decref(j);
			return NULL;
		}
	}
	return j;
}

/* "size": a positive integer number of bytes, a multiple of 512. */
static int body_size(struct aconn *c, json_t *j, uint64_t *out)
{
	json_t *v = json_object_get(j, "size");

	if (!v) {
		send_error(c, 400, "missing \"size\" (bytes)");
		return -1;
	}
	if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
	    json_integer_value(v) % TDO_SECTOR_SIZE) {
		send_error(c, 400, "\"size\" must be a positive integer number of bytes, a multiple of %u",
		           TDO_SECTOR_SIZE);
		return -1;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static bool name_ok(struct aconn *c, const char *name)
{
	if (tdo_vol_name_valid(name))
		return true;
	send_error(c, 400, "invalid volume name '%.64s' (1-63 of A-Z a-z 0-9 . _ -, not starting with . or -)",
	           name);
	return false;
}

static void h_vol_list(struct aconn *c)
{
	struct daemon *d = c->a->d;
	struct tdo_vol_info one, *vi;
	json_t *arr;
	int n;

	if (d->vtier) {
		send_json(c, 200, NULL, tdo_vtier_status(d->vtier));
		return;
	}
	arr = json_array();
	n = tdo_vol_list(d->engine, &one, 0);

	vi = calloc((size_t)n + 1, sizeof *vi);
	if (!vi || !arr) {
		free(vi);
		json_decref(arr);
		reply_failure(c, -ENOMEM);
		return;
	}
	n = tdo_vol_list(d->engine, vi, n);
	for (int i = 0; i < n; i++)
		json_array_append_new(arr, vol_json(d, &vi[i]));
	free(vi);
	send_json(c, 200, NULL, arr);
}

static void h_vol_create(struct aconn *c)
{
	static const char *const keys[] = { "name", "size", "compress", "replicas", "primary", NULL };
	json_t *j = body_object(c, keys), *v;
	const char *name;
	int replicas = 0;
	const char *primary = NULL;

	if (!j)
		return;
	v = json_object_get(j, "name");
	if (!json_is_string(v)) {
		send_error(c, 400, "missing \"name\" (a string)");
		goto out;
	}
	name = json_string_value(v);
	if (!name_ok(c, name) || body_size(c, j, &c->op_size))
		goto out;
	c->op_flags = 0;
	v = json_object_get(j, "compress");
	if (v && (!json_is_string(v) || (strcmp(json_string_value(v), "lz4") && strcmp(json_string_value(v), "none")))) {
		send_error(c, 400, "\"compress\" must be \"lz4\" or \"none\"");
		goto out;
	}
	if (v && !strcmp(json_string_value(v), "lz4"))
		c->op_flags = TDO_VOL_LZ4;
	v = json_object_get(j, "replicas");
	if (v && (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > TDO_REP_MAX)) {
		send_error(c, 400, "\"replicas\" must be an integer from 1 to %d", TDO_REP_MAX);
		goto out;
	}
	if (v)
		replicas = (int)json_integer_value(v);
	v = json_object_get(j, "primary");
	if (v && (!json_is_string(v) || tdo_node_id_valid(json_string_value(v)))) {
		send_error(c, 400, "\"primary\" must be a node id");
		goto out;
	}
	if (v)
		primary = json_string_value(v);
	if ((replicas || primary) && !c->a->d->vtier) {
		send_error(c, 400, "\"replicas\" and \"primary\" need a node in a cluster (testudod --node-id)");
		goto out;
	}
	snprintf(c->op_name, sizeof c->op_name, "%s", name);
	c->op = OP_CREATE;
	if (c->a->d->vtier)
		start_vt_op(c, replicas, primary, NULL);
	else
		start_vol_op(c);
out:
	json_decref(j);
}

static void h_vol_get(struct aconn *c, const char *name)
{
	snprintf(c->op_name, sizeof c->op_name, "%s", name);
	if (c->a->d->vtier) {
		json_t *j = tdo_vtier_volume_json(c->a->d->vtier, name);
		if (j)
			send_json(c, 200, NULL, j);
		else
			reply_failure(c, TDO_ENOVOL);
		return;
	}
	reply_volume(c, 200, name);
}

static void h_vol_resize(struct aconn *c, const char *name)
{
	static const char *const keys[] = { "size", NULL };
	struct daemon *d = c->a->d;
	struct tdo_vol_info vi;
	json_t *j = body_object(c, keys);
	int err;

	snprintf(c->op_name, sizeof c->op_name, "%s", name);
	c->op = OP_RESIZE;
	if (!j || body_size(c, j, &c->op_size))
		goto out;
	if (d->vtier) {
		uint64_t cur;
		if (tdo_vtier_lookup(d->vtier, name, &cur)) {
			reply_failure(c, TDO_ENOVOL);
			goto out;
		}
		if (c->op_size < cur && nbd_conn_count(d, name) > 0) {
			reply_failure(c, -EBUSY);
			goto out;
		}
		json_decref(j);
		start_vt_op(c, 0, NULL, NULL);
		return;
	}
	err = tdo_vol_lookup(d->engine, name, &vi);
	if (err) {
		reply_failure(c, err);
		goto out;
	}
	/* an attached client would find its end cut off under it */
	if (c->op_size < vi.size && nbd_conn_count(d, name) > 0) {
		reply_failure(c, -EBUSY);
		goto out;
	}
	json_decref(j);
	start_vol_op(c);
	return;
out:
	c->op = OP_NONE;
	json_decref(j);
}

static void h_vol_delete(struct aconn *c, const char *name, bool force)
{
	struct daemon *d = c->a->d;

	snprintf(c->op_name, sizeof c->op_name, "%s", name);
	c->op = OP_DELETE;
	if (force && nbd_conn_count(d, name) > 0) {
		/* the clients see their connection die, as if the node had */
		tdo_log(TDO_LOG_WARN, "admin", "%s: forced delete of volume %s: closing its NBD connections",
		        c->peer, name);
		nbd_conn_close_volume(d, name, "volume deleted (forced)");
	}
	if (nbd_conn_count(d, name) > 0) {
		reply_failure(c, -EBUSY);
		c->op = OP_NONE;
		return;
	}
	if (d->vtier)
		start_vt_op(c, 0, NULL, NULL);
	else
		start_vol_op(c);
}

/* POST /v1/volumes/NAME/promote {"node": ID} and POST /v1/volumes/NAME/verify */
static void h_vol_action(struct aconn *c, const char *name, const char *action)
{
	static const char *const keys[] = { "node", NULL };
	json_t *j = NULL, *v;

	snprintf(c->op_name, sizeof c->op_name, "%s", name);
	if (!c->a->d->vtier) {
		send_error(c, 400, "%s needs a node in a cluster (testudod --node-id)", action);
		return;
	}
	if (!strcmp(action, "verify")) {
		c->op = OP_VERIFY;
		start_vt_op(c, 0, NULL, NULL);
		return;
	}
	if (!(j = body_object(c, keys)))
		return;
	v = json_object_get(j, "node");
	if (!json_is_string(v) || tdo_node_id_valid(json_string_value(v))) {
		send_error(c, 400, "missing \"node\" (a node id)");
		json_decref(j);
		return;
	}
	c->op = OP_PROMOTE;
	start_vt_op(c, 0, NULL, json_string_value(v));
	json_decref(j);
}

/* ---- status and metrics ---------------------------------------------------- */

/* (user + cleaner) / user payload bytes; 1 before anything was written. */
static double write_amp(const struct tdo_engine_stats *st)
{
	if (st->user_bytes == 0)
		return 1.0;
	return (double)(st->user_bytes + st->clean_bytes) / (double)st->user_bytes;
}

/* This node, its peer listener and what it knows of each peer. */
static json_t *cluster_json(struct daemon *d)
{
	struct tdo_peer_info pi[TDO_MAX_PEERS];
	int n = tdo_cluster_peers(d->cluster, pi, TDO_MAX_PEERS);
	uint64_t now = tdo_now_usec();
	json_t *peers = json_array();

	for (int i = 0; i < n && i < TDO_MAX_PEERS; i++)
		json_array_append_new(peers, json_pack("{s:s, s:s, s:s, s:s, s:f, s:I, s:I, s:s}",
		        "id", pi[i].id, "address", pi[i].address, "state", tdo_peer_state_name(pi[i].state),
		        "dialled_by", pi[i].dials ? "us" : "peer",
		        "state_seconds", (double)(now - pi[i].since_usec) / 1e6,
		        "connects", (json_int_t)pi[i].connects, "drops", (json_int_t)pi[i].drops,
		        "last_error", pi[i].last_error));
	return json_pack("{s:s, s:s, s:s, s:o}", "name", tdo_cluster_name(d->cluster),
	                 "node_id", tdo_cluster_node_id(d->cluster), "repl", d->repl_addr, "peers", peers);
}

static void h_status(struct aconn *c)
{
	struct daemon *d = c->a->d;
	struct tdo_engine_stats st;
	struct tdo_vol_info one;
	json_t *eng, *j;

	tdo_engine_stats(d->engine, &st);
	eng = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
	                " s:{s:i, s:i, s:i}, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}",
	                "device_bytes", (json_int_t)st.dev_size,
	                "segment_bytes", (json_int_t)st.seg_size,
	                "capacity", (json_int_t)st.capacity,
	                "volume_bytes", (json_int_t)st.vol_bytes,
	                "live_bytes", (json_int_t)st.live_bytes,
	                "user_bytes", (json_int_t)st.user_bytes,
	                "log_bytes", (json_int_t)st.log_bytes,
	                "cleaner_bytes", (json_int_t)st.clean_bytes,
	                "segments", "total", (int)st.seg_count, "used", (int)st.seg_used, "free", (int)st.seg_free,
	                "write_amplification", write_amp(&st),
	                "segments_cleaned", (json_int_t)st.segs_cleaned,
	                "checkpoints", (json_int_t)st.ckpt_count,
	                "batches", (json_int_t)st.batches,
	                "batch_records", (json_int_t)st.batch_recs,
	                "index_bytes", (json_int_t)st.index_bytes,
	                "read_errors", (json_int_t)st.read_errors,
	                "recovery_usec", (json_int_t)st.recovery_usec,
	                "replayed_batches", (json_int_t)st.replayed_batches,
	                "poisoned", st.poisoned);
	j = json_pack("{s:s, s:{s:s, s:s}, s:I, s:i, s:i, s:o}",
	              "device", d->device ? d->device : "",
	              "listeners", "nbd", d->nbd_addr, "admin", d->admin_addr,
	              "uptime_seconds", (json_int_t)((tdo_now_usec() - d->started_usec) / 1000000),
	              "volumes", tdo_vol_list(d->engine, &one, 0),
	              "connections", nbd_conn_count(d, NULL),
	              "engine", eng);
	if (j && d->cluster) {
		json_t *cl = cluster_json(d);
		if (cl && d->vtier)
			json_object_set_new(cl, "volumes", tdo_vtier_status(d->vtier));
		json_object_set_new(j, "cluster", cl);
	}
	send_json(c, 200, NULL, j);
}

static void prom_family(struct sbuf *b, const char *name, const char *type, const char *help)
{
	sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_u64(struct sbuf *b, const char *name, const char *type, const char *help, uint64_t v)
{
	prom_family(b, name, type, help);
	sb_printf(b, "%s %" PRIu64 "\n", name, v);
}

/* Label values: names are [A-Za-z0-9._-] today; escape anyway. */
static void prom_label(struct sbuf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			sb_printf(b, "\\%c", *s);
		else if (*s == '\n')
			sb_printf(b, "\\n");
		else
			sb_printf(b, "%c", *s);
	}
}

static void prom_vol(struct sbuf *b, const char *metric, const char *vol)
{
	sb_printf(b, "%s{volume=\"", metric);
	prom_label(b, vol);
	sb_printf(b, "\"");
}

static void h_metrics(struct aconn *c)
{
	struct daemon *d = c->a->d;
	struct metrics *m = &d->met;
	struct tdo_engine_stats st;
	struct tdo_vol_info one, *vi;
	struct sbuf b = { 0 };
	int n;

	tdo_engine_stats(d->engine, &st);
	n = tdo_vol_list(d->engine, &one, 0);
	vi = calloc((size_t)n + 1, sizeof *vi);
	if (!vi) {
		reply_failure(c, -ENOMEM);
		return;
	}
	n = tdo_vol_list(d->engine, vi, n);
	/* every volume is listed, with zeroes until its first request */
	for (int i = 0; i < n; i++)
		met_vol(m, vi[i].name);

	prom_family(&b, "testudo_volume_size_bytes", "gauge", "Volume size.");
	for (int i = 0; i < n; i++) {
		prom_vol(&b, "testudo_volume_size_bytes", vi[i].name);
		sb_printf(&b, "} %" PRIu64 "\n", vi[i].size);
	}
	prom_family(&b, "testudo_volume_used_bytes", "gauge", "Live payload bytes of the volume on the device.");
	for (int i = 0; i < n; i++) {
		prom_vol(&b, "testudo_volume_used_bytes", vi[i].name);
		sb_printf(&b, "} %" PRIu64 "\n", vi[i].used_bytes);
	}
	prom_family(&b, "testudo_volume_lsn", "gauge", "Newest LSN assigned in the volume.");
	for (int i = 0; i < n; i++) {
		prom_vol(&b, "testudo_volume_lsn", vi[i].name);
		sb_printf(&b, "} %" PRIu64 "\n", vi[i].lsn);
	}
	prom_family(&b, "testudo_volume_connections", "gauge", "Open NBD connections attached to the volume.");
	for (int i = 0; i < n; i++) {
		prom_vol(&b, "testudo_volume_connections", vi[i].name);
		sb_printf(&b, "} %d\n", nbd_conn_count(d, vi[i].name));
	}
	free(vi);

	prom_family(&b, "testudo_volume_ops_total", "counter", "NBD requests completed, by volume and operation.");
	for (uint32_t i = 0; i < m->nvols; i++)
		for (int op = 0; op < MET_NOPS && m->vols[i].name[0]; op++) {
			prom_vol(&b, "testudo_volume_ops_total", m->vols[i].name);
			sb_printf(&b, ",op=\"%s\"} %" PRIu64 "\n", met_op_name(op), m->vols[i].ops[op]);
		}
	prom_family(&b, "testudo_volume_errors_total", "counter", "NBD requests that failed, by volume and operation.");
	for (uint32_t i = 0; i < m->nvols; i++)
		for (int op = 0; op < MET_NOPS && m->vols[i].name[0]; op++) {
			prom_vol(&b, "testudo_volume_errors_total", m->vols[i].name);
			sb_printf(&b, ",op=\"%s\"} %" PRIu64 "\n", met_op_name(op), m->vols[i].errors[op]);
		}
	prom_family(&b, "testudo_volume_read_bytes_total", "counter", "Bytes read by NBD clients.");
	for (uint32_t i = 0; i < m->nvols; i++)
		if (m->vols[i].name[0]) {
			prom_vol(&b, "testudo_volume_read_bytes_total", m->vols[i].name);
			sb_printf(&b, "} %" PRIu64 "\n", m->vols[i].bytes_read);
		}
	prom_family(&b, "testudo_volume_written_bytes_total", "counter", "Bytes written by NBD clients.");
	for (uint32_t i = 0; i < m->nvols; i++)
		if (m->vols[i].name[0]) {
			prom_vol(&b, "testudo_volume_written_bytes_total", m->vols[i].name);
			sb_printf(&b, "} %" PRIu64 "\n", m->vols[i].bytes_written);
		}
	prom_family(&b, "testudo_volume_request_duration_seconds", "histogram",
	            "NBD request latency, by volume and operation (operations seen so far).");
	for (uint32_t i = 0; i < m->nvols; i++) {
		const struct met_vol *v = &m->vols[i];
		for (int op = 0; op < MET_NOPS && v->name[0]; op++) {
			const struct met_hist *h = &v->lat[op];
			if (h->count == 0)
				continue;
			for (int k = 0; k < MET_BUCKETS; k++) {
				prom_vol(&b, "testudo_volume_request_duration_seconds_bucket", v->name);
				sb_printf(&b, ",op=\"%s\",le=\"", met_op_name(op));
				sb_seconds(&b, UINT64_C(1) << k);
				sb_printf(&b, "\"} %" PRIu64 "\n", h->bucket[k]);
			}
			prom_vol(&b, "testudo_volume_request_duration_seconds_bucket", v->name);
			sb_printf(&b, ",op=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", met_op_name(op), h->count);
			prom_vol(&b, "testudo_volume_request_duration_seconds_sum", v->name);
			sb_printf(&b, ",op=\"%s\"} ", met_op_name(op));
			sb_seconds(&b, h->sum_usec);
			sb_printf(&b, "\n");
			prom_vol(&b, "testudo_volume_request_duration_seconds_count", v->name);
			sb_printf(&b, ",op=\"%s\"} %" PRIu64 "\n", met_op_name(op), h->count);
		}
	}

	prom_u64(&b, "testudo_volumes", "gauge", "Volumes on the device.", (uint64_t)n);
	prom_u64(&b, "testudo_engine_capacity_bytes", "gauge", "Bytes volumes may total.", st.capacity);
	prom_u64(&b, "testudo_engine_volume_bytes", "gauge", "Bytes volumes do total.", st.vol_bytes);
	prom_u64(&b, "testudo_engine_live_bytes", "gauge", "Payload bytes the index refers to.", st.live_bytes);
	prom_u64(&b, "testudo_engine_index_bytes", "gauge", "Memory held by the index.", st.index_bytes);
	prom_u64(&b, "testudo_engine_user_bytes_total", "counter", "Payload bytes written by clients (device lifetime).", st.user_bytes);
	prom_u64(&b, "testudo_engine_log_bytes_total", "counter", "Bytes appended to the log (device lifetime).", st.log_bytes);
	prom_u64(&b, "testudo_engine_cleaner_bytes_total", "counter", "Payload bytes the cleaner copied (device lifetime).", st.clean_bytes);
	prom_u64(&b, "testudo_engine_segments_cleaned_total", "counter", "Segments the cleaner reclaimed.", st.segs_cleaned);
	prom_family(&b, "testudo_engine_write_amplification", "gauge", "(user + cleaner bytes) / user bytes.");
	sb_printf(&b, "testudo_engine_write_amplification %.4f\n", write_amp(&st));
	prom_family(&b, "testudo_engine_segments", "gauge", "Segments by state.");
	sb_printf(&b, "testudo_engine_segments{state=\"used\"} %u\ntestudo_engine_segments{state=\"free\"} %u\n",
	          st.seg_used, st.seg_free);
	prom_u64(&b, "testudo_engine_batches_total", "counter", "Group commits (flush batches) since the device was opened.", st.batches);
	prom_u64(&b, "testudo_engine_batch_records_total", "counter", "Records in those flush batches.", st.batch_recs);
	prom_u64(&b, "testudo_engine_checkpoints_total", "counter", "Checkpoints written since the device was opened.", st.ckpt_count);
	prom_u64(&b, "testudo_engine_read_checksum_errors_total", "counter", "Checksum failures seen by reads.", st.read_errors);
	prom_u64(&b, "testudo_engine_poisoned", "gauge", "1 once a device write or sync failed and the engine stopped.", st.poisoned ? 1 : 0);
	prom_family(&b, "testudo_engine_recovery_seconds", "gauge", "Time the last open spent recovering.");
	sb_printf(&b, "testudo_engine_recovery_seconds ");
	sb_seconds(&b, st.recovery_usec);
	sb_printf(&b, "\n");

	prom_u64(&b, "testudo_nbd_connections_total", "counter", "NBD connections accepted.", m->conns_total);
	prom_u64(&b, "testudo_nbd_connections_open", "gauge", "NBD connections open.", m->conns_open);
	prom_u64(&b, "testudo_nbd_handshakes_failed_total", "counter", "NBD connections that ended in the handshake.", m->handshakes_failed);
	prom_u64(&b, "testudo_nbd_protocol_errors_total", "counter", "NBD connections closed for a protocol violation.", m->protocol_errors);
	prom_u64(&b, "testudo_admin_requests_total", "counter", "Admin HTTP requests answered.", c->a->requests);
	prom_u64(&b, "testudo_admin_connections_open", "gauge", "Admin HTTP connections open.", c->a->nconns);
	prom_family(&b, "testudo_uptime_seconds", "gauge", "Seconds since testudod started.");
	sb_printf(&b, "testudo_uptime_seconds ");
	sb_seconds(&b, tdo_now_usec() - d->started_usec);
	sb_printf(&b, "\n");

	if (b.oom)
		reply_failure(c, -ENOMEM);
	else
		send_reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.p, b.len);
	free(b.p);
}

/* ---- routing --------------------------------------------------------------- */

static bool method_is(const struct aconn *c, const char *m)
{
	return strcmp(c->req.method, m) == 0;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Percent-decode a path segment into OUT (OUTLEN bytes with the NUL); -1 when it does not fit or is malformed. */
static int decode_segment(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (ch == '%') {
			int hi, lo;
			if (i + 2 >= n)
				return -1;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			ch = (char)(hi * 16 + lo);
			i += 2;
		}
		if (o + 1 >= outlen)
			return -1;
		out[o++] = ch;
	}
	out[o] = 0;
	return 0;
}

static void dispatch(struct aconn *c)
{
	struct daemon *d = c->a->d;
	const char *t = c->in + c->req.target_off;
	size_t plen = c->req.target_len;
	const char *q = memchr(t, '?', plen);
	bool get, force = false;
	char name[TDO_NAME_MAX + 1];

	c->op = OP_NONE;
	c->op_name[0] = 0;
	if (q) {
		/* only DELETE on a volume takes one (force=1); the rest is ignored */
		force = query_has(q + 1, c->req.target_len - (size_t)(q - t) - 1, "force=1");
		plen = (size_t)(q - t);
	}
	if (memchr(t, '#', c->req.target_len)) {
		c->close_after = true;
		send_error(c, 400, "a request target has no fragment");
		return;
	}
	c->req.head_only = method_is(c, "HEAD");
	get = method_is(c, "GET") || c->req.head_only;
	tdo_log(TDO_LOG_DEBUG, "admin", "%s: %s %.*s", c->peer, c->req.method, (int)c->req.target_len, t);
	if (!d->engine || d->stopping) {
		send_error(c, 503, "testudod is shutting down");
		return;
	}
#define PATH_IS(p) (plen == sizeof(p) - 1 && memcmp(t, p, plen) == 0)
	if (PATH_IS("/v1/volumes")) {
		if (get)
			h_vol_list(c);
		else if (method_is(c, "POST"))
			h_vol_create(c);
		else
			send_error_hdr(c, 405, "Allow: GET, HEAD, POST\r\n", "%s is not allowed on /v1/volumes", c->req.method);
	} else if (plen > 12 && memcmp(t, "/v1/volumes/", 12) == 0 && memchr(t + 12, '/', plen - 12)) {
		const char *slash = memchr(t + 12, '/', plen - 12);
		size_t alen = plen - (size_t)(slash + 1 - t);
		const char *action = alen == 7 && !memcmp(slash + 1, "promote", 7) ? "promote" :
		                     alen == 6 && !memcmp(slash + 1, "verify", 6) ? "verify" : NULL;
		if (!action || decode_segment(t + 12, (size_t)(slash - (t + 12)), name, sizeof name) < 0) {
			send_error(c, 404, "no such endpoint: %.*s (a volume has /promote and /verify)",
			           (int)(plen > 200 ? 200 : plen), t);
			return;
		}
		if (!method_is(c, "POST")) {
			send_error_hdr(c, 405, "Allow: POST\r\n", "%s is not allowed on /%s", c->req.method, action);
			return;
		}
		if (name_ok(c, name))
			h_vol_action(c, name, action);
	} else if (plen > 12 && memcmp(t, "/v1/volumes/", 12) == 0 && !memchr(t + 12, '/', plen - 12)) {
		if (decode_segment(t + 12, plen - 12, name, sizeof name) < 0) {
			send_error(c, 400, "invalid volume name in the path");
			return;
		}
		if (!get && !method_is(c, "PUT") && !method_is(c, "DELETE")) {
			send_error_hdr(c, 405, "Allow: GET, HEAD, PUT, DELETE\r\n", "%s is not allowed on a volume",
			               c->req.method);
			return;
		}
		if (!name_ok(c, name))
			return;
		if (get)
			h_vol_get(c, name);
		else if (method_is(c, "PUT"))
			h_vol_resize(c, name);
		else
			h_vol_delete(c, name, force);
	} else if (PATH_IS("/v1/status")) {
		if (get)
			h_status(c);
		else
			send_error_hdr(c, 405, "Allow: GET, HEAD\r\n", "%s is not allowed on /v1/status", c->req.method);
	} else if (PATH_IS("/metrics")) {
		if (get)
			h_metrics(c);
		else
			send_error_hdr(c, 405, "Allow: GET, HEAD\r\n", "%s is not allowed on /metrics", c->req.method);
	} else {
		send_error(c, 404, "no such endpoint: %.*s (try /v1/volumes, /v1/status, /metrics)",
		           (int)(plen > 200 ? 200 : plen), t);
	}
#undef PATH_IS
}

/* ---- listener ---------------------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
	struct admin *a = server->data;
	struct aconn *c;
	struct sockaddr_storage sa;
	int salen = sizeof sa;
	char host[INET6_ADDRSTRLEN] = "?";

	if (status < 0) {
		tdo_log(TDO_LOG_WARN, "admin", "accept: %s", uv_strerror(status));
		return;
	}
	c = calloc(1, sizeof *c);
	if (!c) {
		tdo_log(TDO_LOG_ERROR, "admin", "accept: out of memory");
		return;
	}
	c->a = a;
	c->refs = 2;
	c->state = AS_HEAD;
	c->tcp.data = c;
	c->timer.data = c;
	uv_tcp_init(a->d->loop, &c->tcp);
	uv_timer_init(a->d->loop, &c->timer);
	c->next = a->conns;
	if (a->conns)
		a->conns->prev = c;
	a->conns = c;
	a->nconns++;
	a->conns_total++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
		conn_close(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0) {
		if (sa.ss_family == AF_INET6) {
			uv_ip6_name((struct sockaddr_in6 *)&sa, host, sizeof host);
			snprintf(c->peer, sizeof c->peer, "[%s]:%d", host, ntohs(((struct sockaddr_in6 *)&sa)->sin6_port));
		} else {
			uv_ip4_name((struct sockaddr_in *)&sa, host, sizeof host);
			snprintf(c->peer, sizeof c->peer, "%s:%d", host, ntohs(((struct sockaddr_in *)&sa)->sin_port));
		}
	}
	if (a->nconns > ADMIN_MAX_CONNS) {
		tdo_log(TDO_LOG_WARN, "admin", "%s: refused: %u connections open", c->peer, ADMIN_MAX_CONNS);
		c->close_after = true;
		send_error(c, 503, "too many admin connections");
		return;
	}
	uv_timer_start(&c->timer, on_timer, ADMIN_REQ_MS, 0);
	read_on(c);
}

int admin_listen(struct daemon *d, const char *host, int port)
{
	struct admin *a = calloc(1, sizeof *a);
	int err;

	if (!a)
		return UV_ENOMEM;
	a->d = d;
	err = tdo_tcp_listen(d->loop, &d->admin_listener, host, port, on_connection,
	                 d->admin_addr, sizeof d->admin_addr, NULL);
	if (err) {
		free(a);
		return err;
	}
	d->admin_listener.data = a;
	tdo_log(TDO_LOG_INFO, "admin", "listening on %s", d->admin_addr);
	return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
	struct admin *a = h->data;

	a->listener_closed = true;
	admin_maybe_free(a);
}

void admin_shutdown(struct daemon *d)
{
	struct admin *a = d->admin_listener.data;

	if (!a || a->shutting)
		return;
	a->shutting = true;
	uv_close((uv_handle_t *)&d->admin_listener, on_listener_closed);
	/* a volume operation with the engine still gets its reply, then the
	 * connection closes; everything else closes now */
	for (struct aconn *c = a->conns; c; c = c->next)
		if (c->state != AS_ENGINE)
			conn_close(c);
}
