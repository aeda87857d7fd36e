/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the admin endpoint's HTTP/1.1 connections: accept, read,
 * frame, reply, keep alive, close. admin.c answers the requests.
 *
 * What: each connection reads into one buffer, has http_parse() read the
 * request line and headers, waits for the body (Content-Length only),
 * hands the complete request to admin_dispatch() and writes the reply the
 * handler gives http_reply(), at once or from a volume tier callback. Malformed
 * requests get 400 (431 for a request line and headers over 16 KiB, 413
 * for a body over 64 KiB, 501 for Transfer-Encoding, 505 for other HTTP
 * versions, 408 for one that does not arrive in time) and the connection
 * is closed after the reply; the error body is admin.c's
 * (admin_reply_error()).
 *
 * Why this way: a small, strict parser of our own rather than a library:
 * one request at a time per connection, framed only by Content-Length.
 * The request line and headers are bounded (HTTP_MAX_HEAD), the body is
 * bounded (HTTP_MAX_BODY) before anything is buffered, and so is the
 * number of connections and the time a request may take to arrive. Each
 * connection is an ordered state machine (enum aconn_state, written only
 * here): reading stops while a request is with the volume tier or its reply is
 * being written, so pipelined requests are answered in order and a client
 * that does not read cannot make us buffer without bound.
 *
 * Must never: trust a length from the network before checking it, block
 * the loop, or free a connection anywhere but in the last of its close
 * callbacks (a connection is freed when both its handles are closed and no
 * volume operation still holds it: aconn.refs, http_hold()).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "admin.h"

#define HTTP_MAX_CONNS   256           /* beyond this, 503 and close */
#define HTTP_IN_MIN      4096
#define HTTP_IN_MAX      (HTTP_MAX_HEAD + HTTP_MAX_BODY + HTTP_IN_MIN)
#define HTTP_REQ_MS      30000         /* a request (or idle keep-alive, or a reply) */
#define HTTP_LINGER_MS   2000          /* draining input after a final reply */

struct wreq {
	uv_write_t req;
	struct aconn *c;
	bool final;                 /* the reply, not an interim 100 Continue */
	size_t len;
	char data[];
};

static void aconn_close(struct aconn *c);
static void aconn_process(struct aconn *c);
static void read_on(struct aconn *c);

/* ---- small helpers ------------------------------------------------------- */

const char *http_reason(int status)
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

/* ---- connection lifetime -------------------------------------------------- */

static void admin_maybe_free(struct admin *a)
{
	if (a->shutting && a->listener_closed && a->nconns == 0) {
		a->d->admin_listener.data = NULL;
		free(a);
	}
}

static void aconn_unref(struct aconn *c)
{
	struct admin *a = c->a;

	if (--c->refs > 0)
		return;
	tdo_list_del(&c->link);
	a->nconns--;
	free(c->in);
	free(c);
	admin_maybe_free(a);
}

static void on_handle_closed(uv_handle_t *h)
{
	aconn_unref(h->data);
}

static void aconn_close(struct aconn *c)
{
	if (c->state == AS_CLOSING)
		return;
	c->state = AS_CLOSING;
	c->reading = false;
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void read_off(struct aconn *c);

void http_hold(struct aconn *c)
{
	c->refs++;
	c->state = AS_VOLUME_OP;
	read_off(c);
}

void http_release(struct aconn *c)
{
	aconn_unref(c);
}

/* ---- replies ------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct aconn *c = req->data;

	if (c->state == AS_CLOSING)
		return;
	if (status < 0 || c->a->shutting) {
		aconn_close(c);
		return;
	}
	/* let the client read the reply: drain what it still sends, then close */
	c->state = AS_LINGER;
	c->in_len = 0;
	uv_timer_start(&c->timer, on_timer, HTTP_LINGER_MS, 0);
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
			aconn_close(c);
		return;
	}
	c->state = AS_HEAD;
	memset(&c->req, 0, sizeof c->req);
	c->continue_sent = c->head_only = false;
	uv_timer_start(&c->timer, on_timer, HTTP_REQ_MS, 0);
	aconn_process(c);
}

static void on_http_write(uv_write_t *req, int status)
{
	struct wreq *w = req->data;
	struct aconn *c = w->c;
	bool final = w->final;

	free(w);
	if (status < 0) {
		if (c->state != AS_CLOSING)
			tdo_log(TDO_LOG_DEBUG, "admin", "%s: write failed: %s", c->peer, uv_strerror(status));
		aconn_close(c);
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
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_http_write) < 0) {
		free(w);
		return -EIO;
	}
	return 0;
}

void http_reply(struct aconn *c, int status, const char *ctype, const char *extra,
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
	uv_timer_start(&c->timer, on_timer, HTTP_REQ_MS, 0);
	gmtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	n = snprintf(hdr, sizeof hdr,
	             "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: testudod\r\nContent-Type: %s\r\n"
	             "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
	             status, http_reason(status), date, ctype, blen,
	             c->close_after ? "close" : "keep-alive", extra ? extra : "");
	if (n < 0 || (size_t)n >= sizeof hdr ||
	    queue_write(c, hdr, (size_t)n, body, c->head_only ? 0 : blen, true) < 0) {
		tdo_log(TDO_LOG_ERROR, "admin", "%s: cannot queue a reply", c->peer);
		aconn_close(c);
	}
}

/* A malformed request: answer and hang up, since its framing is lost. */
static void bad_request(struct aconn *c, int status, const char *msg)
{
	tdo_log(TDO_LOG_INFO, "admin", "%s: %d %s", c->peer, status, msg);
	c->close_after = true;
	admin_reply_error(c, status, msg);
}

static void send_interim_continue(struct aconn *c)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

	c->continue_sent = true;
	if (queue_write(c, cont, sizeof cont - 1, NULL, 0, false) < 0)
		aconn_close(c);
}

static void on_timer(uv_timer_t *t)
{
	struct aconn *c = t->data;

	if ((c->state == AS_HEAD && c->in_len > 0) || c->state == AS_BODY) {
		c->req.keep_alive = false;
		bad_request(c, 408, "request not complete in time");
		/* the reply gets the linger's time, not another request's */
		uv_timer_start(&c->timer, on_timer, HTTP_LINGER_MS, 0);
		return;
	}
	/* idle keep-alive, a reply nobody reads, or the linger is over */
	aconn_close(c);
}

/* ---- reading and parsing --------------------------------------------------- */

static void on_http_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct aconn *c = h->data;

	(void)suggested;
	if (c->state == AS_LINGER)
		c->in_len = 0;          /* draining: everything is discarded */
	if (c->in_cap - c->in_len < HTTP_IN_MIN && c->in_cap < HTTP_IN_MAX) {
		size_t ncap = c->in_cap ? c->in_cap * 2 : HTTP_IN_MIN;
		char *p;
		if (ncap > HTTP_IN_MAX)
			ncap = HTTP_IN_MAX;
		p = realloc(c->in, ncap);
		if (p) {
			c->in = p;
			c->in_cap = ncap;
		}
	}
	/* a zero-length buffer makes libuv report UV_ENOBUFS: we then close */
	*buf = uv_buf_init(c->in ? c->in + c->in_len : NULL, (unsigned)(c->in_cap - c->in_len));
}

static void on_http_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct aconn *c = s->data;

	(void)buf;
	if (nread == 0 || c->state == AS_CLOSING)
		return;
	if (nread < 0) {
		if (nread != UV_EOF && c->state != AS_LINGER)
			tdo_log(TDO_LOG_DEBUG, "admin", "%s: read: %s", c->peer, uv_strerror((int)nread));
		aconn_close(c);
		return;
	}
	if (c->state == AS_LINGER)
		return;
	c->in_len += (size_t)nread;
	aconn_process(c);
}

static void read_on(struct aconn *c)
{
	if (c->reading || c->state == AS_CLOSING)
		return;
	if (uv_read_start((uv_stream_t *)&c->tcp, on_http_alloc, on_http_read) < 0) {
		aconn_close(c);
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
	if (c->in_len == 0 && c->in_cap > HTTP_IN_MIN) {
		free(c->in);            /* an idle connection keeps no big buffer */
		c->in = NULL;
		c->in_cap = 0;
	}
}

/* Parse and answer what the input holds, in order, one request at a time. */
static void aconn_process(struct aconn *c)
{
	const char *why = NULL;
	int n;

	if (c->state == AS_HEAD) {
		size_t skip = http_skip_empty_lines(c->in, c->in_len);

		if (skip)
			consume(c, skip);
		if (c->in_len == 0) {
			read_on(c);
			return;
		}
		n = http_parse(c->in, c->in_len, &c->req, &why);
		if (n < 0) {
			bad_request(c, -n, why);
			return;
		}
		if (n == 0) {
			read_on(c);
			return;
		}
		c->state = AS_BODY;
	}
	if (c->state == AS_BODY) {
		if (c->in_len - c->req.head_len < c->req.body_len) {
			if (c->req.expect_continue && !c->continue_sent)
				send_interim_continue(c);
			read_on(c);
			return;
		}
		uv_timer_stop(&c->timer);
		c->a->requests++;
		admin_dispatch(c);
		consume(c, c->req.head_len + c->req.body_len);
	}
}

/* ---- listener ---------------------------------------------------------------- */

static void on_http_connection(uv_stream_t *server, int status)
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
	tdo_list_add_tail(&a->conns, &c->link);
	a->nconns++;
	a->conns_total++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
		aconn_close(c);
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
	if (a->nconns > HTTP_MAX_CONNS) {
		tdo_log(TDO_LOG_WARN, "admin", "%s: refused: %u connections open", c->peer, HTTP_MAX_CONNS);
		c->close_after = true;
		admin_reply_error(c, 503, "too many admin connections");
		return;
	}
	uv_timer_start(&c->timer, on_timer, HTTP_REQ_MS, 0);
	read_on(c);
}

int http_listen(struct daemon *d, const char *host, int port)
{
	struct admin *a = calloc(1, sizeof *a);
	int err;

	if (!a)
		return UV_ENOMEM;
	a->d = d;
	tdo_list_init(&a->conns);
	err = tdo_tcp_listen(d->loop, &d->admin_listener, host, port, on_http_connection,
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

void http_shutdown(struct daemon *d)
{
	struct admin *a = d->admin_listener.data;

	if (!a || a->shutting)
		return;
	a->shutting = true;
	uv_close((uv_handle_t *)&d->admin_listener, on_listener_closed);
	/* a volume operation with the volume tier still gets its reply, then the
	 * connection closes; everything else closes now */
	tdo_list_foreach(l, &a->conns) {
		struct aconn *c = tdo_list_item(l, struct aconn, link);
		if (c->state != AS_VOLUME_OP)
			aconn_close(c);
	}
}
