/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: an NBD connection's life: accept, read, hand bytes to the
 * handshake or transmission parser, queue replies, close. Reads go into a
 * per-connection buffer that grows to hold one message; the parsers take
 * what is complete. The rest of a write's payload is read straight into
 * its own buffer, which goes to the volume tier without another copy.
 * Reading stops while too many requests, request bytes (NBD_MAX_HELD) or
 * reply bytes are in flight (back-pressure) and resumes as they drain: as
 * requests finish and as replies are written. At most NBD_MAX_CONNS
 * connections are open; each has NBD_HANDSHAKE_MS to finish its handshake. A connection owns the volume
 * handle its handshake opened and its volume's metrics slot, and lets go
 * of both in its close callback.
 *
 * Must never: free a connection outside its close callback, or let one
 * connection's bad input touch another.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd_internal.h"

#define IN_CHUNK (256u << 10)

struct send_req {
	uv_write_t w;
	void *free_me, *free_me2;
	struct nbd_conn *c;
	uint32_t held;              /* bytes of c->held given back once written */
};

static uint64_t next_conn_id;

static void resume(struct nbd_conn *c);

/* A connection closed before conn_start: the handle's data is all there is. */
static void free_unstarted(uv_handle_t *h)
{
	free(h->data);
}

void nbd_conn_release(struct nbd_conn *c, uint32_t held)
{
	c->held -= held;
	if (held)
		c->held_wait = false; /* the waiting header is parsed again */
}

static void after_send(uv_write_t *w, int status)
{
	struct send_req *s = (struct send_req *)w; /* w is the first member */
	struct nbd_conn *c = s->c; /* write callbacks run before the close callback */

	free(s->free_me);
	free(s->free_me2);
	nbd_conn_release(c, s->held);
	free(s);
	if (status < 0 && status != UV_ECANCELED) {
		/* a client that went away while we did not read: its replies fail */
		nbd_conn_close(c, uv_strerror(status));
		return;
	}
	if (!c->closing)
		resume(c); /* a budget or reply queue that drained lets reading go on */
}

void nbd_conn_send(struct nbd_conn *c, uv_buf_t *bufs, unsigned n, void *free_me, void *free_me2)
{
	nbd_conn_send_held(c, bufs, n, free_me, free_me2, 0);
}

void nbd_conn_send_held(struct nbd_conn *c, uv_buf_t *bufs, unsigned n, void *free_me, void *free_me2,
                        uint32_t held)
{
	struct send_req *s;

	if (c->closing && uv_is_closing((uv_handle_t *)&c->tcp)) {
		free(free_me);
		free(free_me2);
		nbd_conn_release(c, held);
		return;
	}
	s = calloc(1, sizeof *s);
	if (!s) {
		free(free_me);
		free(free_me2);
		nbd_conn_release(c, held);
		nbd_conn_close(c, "out of memory");
		return;
	}
	s->free_me = free_me;
	s->free_me2 = free_me2;
	s->c = c;
	s->held = held;
	if (uv_write(&s->w, (uv_stream_t *)&c->tcp, bufs, n, after_send)) {
		free(free_me);
		free(free_me2);
		nbd_conn_release(c, held);
		free(s);
		nbd_conn_close(c, "write failed");
	}
}

/* The last handle of a connection closed: free it. */
static void on_timer_closed(uv_handle_t *h)
{
	struct nbd_conn *c = h->data;
	struct daemon *d = c->d;

	tdo_list_del(&c->link);
	d->met.conns_open--;
	if (c->vh)
		tdo_vhandle_close(c->vh);
	met_vol_put(&d->met, c->met);
	free(c->in);
	free(c->payload);
	free(c);
	if (d->stopping && tdo_list_empty(&d->conns))
		daemon_conns_drained(d); /* the last one out lets the daemon stop */
}

static void on_closed(uv_handle_t *h)
{
	struct nbd_conn *c = h->data;

	uv_close((uv_handle_t *)&c->hs_timer, on_timer_closed);
}

static void after_shutdown(uv_shutdown_t *req, int status)
{
	struct nbd_conn *c = req->data;

	(void)status;
	free(req);
	if (!uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void maybe_close_now(struct nbd_conn *c)
{
	uv_shutdown_t *req;

	if (!c->closing || c->inflight || c->shutting_down || uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	/* a clean close first lets the queued replies out */
	if (c->graceful && (req = calloc(1, sizeof *req))) {
		req->data = c;
		c->shutting_down = true;
		if (uv_shutdown(req, (uv_stream_t *)&c->tcp, after_shutdown) == 0)
			return;
		free(req);
	}
	uv_close((uv_handle_t *)&c->tcp, on_closed);
}

void nbd_conn_close(struct nbd_conn *c, const char *why)
{
	if (!c->closing) {
		tx_log_quiet_errors(c);
		tdo_log(TDO_LOG_INFO, "nbd", "connection %llu from %s%s%s closed: %s",
		        (unsigned long long)c->id, c->peer, c->name[0] ? " volume " : "", c->name, why);
		c->closing = true;
		c->state = CS_CLOSING;
		if (c->reading)
			uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
	maybe_close_now(c);
}

static void on_nbd_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct nbd_conn *c = h->data;

	(void)suggested;
	if (c->state == CS_REQ_PAYLOAD && c->in_len == 0) {
		/* the rest of a write's payload: straight into its buffer */
		buf->base = (char *)c->payload + c->payload_got;
		buf->len = c->req.rq_length - c->payload_got;
		return;
	}
	if (c->in_cap - c->in_len < IN_CHUNK / 4) {
		size_t cap = c->in_cap ? c->in_cap * 2 : IN_CHUNK;
		uint8_t *n;
		while (cap - c->in_len < IN_CHUNK / 4)
			cap *= 2;
		n = realloc(c->in, cap);
		if (!n) {
			buf->base = NULL;
			buf->len = 0;
			return;
		}
		c->in = n;
		c->in_cap = cap;
	}
	buf->base = (char *)c->in + c->in_len;
	buf->len = c->in_cap - c->in_len;
}

static void update_reading(struct nbd_conn *c);

static void parse(struct nbd_conn *c)
{
	size_t off = 0;

	if (c->parsing)
		return; /* a request finished inside the loop below: it goes on */
	c->parsing = true;
	while (!c->closing && off < c->in_len && c->inflight < NBD_MAX_INFLIGHT) {
		ssize_t used = c->state <= CS_OPT_HEADER ? hs_consume(c, c->in + off, c->in_len - off)
		                                       : tx_consume(c, c->in + off, c->in_len - off);
		if (used < 0) {
			c->parsing = false;
			return; /* closed */
		}
		if (used == 0)
			break;
		off += (size_t)used;
		if (c->disc)
			break;
	}
	c->parsing = false;
	if (c->closing)
		return;
	if (off) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	/* give back memory a large payload needed */
	if (c->in_cap > 4 * IN_CHUNK && c->in_len < IN_CHUNK) {
		uint8_t *n = realloc(c->in, IN_CHUNK);
		if (n) {
			c->in = n;
			c->in_cap = IN_CHUNK;
		}
	}
}

static void on_nbd_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct nbd_conn *c = s->data;

	if (nread < 0) {
		nbd_conn_close(c, nread == UV_EOF ? (c->state <= CS_OPT_HEADER ? "client hung up during the handshake"
		                                                        : "client hung up")
		                              : uv_strerror((int)nread));
		return;
	}
	if (nread == UV_ENOBUFS || nread == 0)
		return;
	if (c->payload && buf->base == (char *)c->payload + c->payload_got) {
		c->payload_got += (uint32_t)nread;
		if (c->payload_got == c->req.rq_length && tx_payload_done(c))
			return;
	} else {
		c->in_len += (size_t)nread;
	}
	parse(c);
	if (!c->closing)
		update_reading(c);
}

static void update_reading(struct nbd_conn *c)
{
	bool want = !c->closing && !c->disc && !c->held_wait && c->inflight < NBD_MAX_INFLIGHT &&
	            uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < NBD_MAX_QUEUED;

	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_nbd_alloc, on_nbd_read) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

void nbd_conn_request_done(struct nbd_conn *c)
{
	if (c->closing) {
		maybe_close_now(c);
		return;
	}
	if (c->disc && c->inflight == 0) {
		c->graceful = true;
		nbd_conn_close(c, c->d->stopping ? "server shutting down" : "clean disconnect (NBD_CMD_DISC)");
		return;
	}
	resume(c);
}

/* Requests may be waiting in the buffer while reading was stopped: parse
 * them, and read again if nothing holds us back. */
static void resume(struct nbd_conn *c)
{
	if (c->in_len && !c->disc)
		parse(c);
	if (!c->closing)
		update_reading(c);
}

static void hs_timeout(uv_timer_t *t)
{
	struct nbd_conn *c = t->data;

	if (!c->closing && c->state <= CS_OPT_HEADER) {
		c->d->met.handshakes_failed++;
		nbd_conn_close(c, "handshake not finished within NBD_HANDSHAKE_MS (10 s)");
	}
}

/* A connected socket becomes an NBD connection: greet and read. */
static void conn_start(struct daemon *d, struct nbd_conn *c)
{
	struct sockaddr_storage sa;
	int salen = sizeof sa;

	uv_tcp_nodelay(&c->tcp, 1);
	snprintf(c->peer, sizeof c->peer, "local");
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0) {
		char host[INET6_ADDRSTRLEN] = "?";
		int port = 0;
		if (sa.ss_family == AF_INET) {
			uv_ip4_name((struct sockaddr_in *)&sa, host, sizeof host);
			port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
		} else if (sa.ss_family == AF_INET6) {
			uv_ip6_name((struct sockaddr_in6 *)&sa, host, sizeof host);
			port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
		}
		snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
	}
	uv_timer_init(d->loop, &c->hs_timer);
	c->hs_timer.data = c;
	uv_timer_start(&c->hs_timer, hs_timeout, NBD_HANDSHAKE_MS, 0);
	tdo_list_add_tail(&d->conns, &c->link);
	d->met.conns_total++;
	d->met.conns_open++;
	tdo_log(TDO_LOG_DEBUG, "nbd", "connection %llu from %s", (unsigned long long)c->id, c->peer);
	if (d->stopping) {
		nbd_conn_close(c, "server shutting down");
		return;
	}
	hs_start(c);
	update_reading(c);
}

int nbd_conn_adopt(struct daemon *d, int fd)
{
	struct nbd_conn *c = calloc(1, sizeof *c);
	int err;

	if (!c)
		return -ENOMEM;
	c->d = d;
	c->id = ++next_conn_id;
	uv_tcp_init(d->loop, &c->tcp);
	c->tcp.data = c;
	if ((err = uv_tcp_open(&c->tcp, fd))) {
		uv_close((uv_handle_t *)&c->tcp, free_unstarted);
		return err;
	}
	conn_start(d, c);
	return 0;
}

/* One more connection than NBD_MAX_CONNS: closed, and said so at most
 * every NBD_REFUSED_LOG_MS with how many went since the last time. */
static void refuse(struct daemon *d, uv_tcp_t *tcp)
{
	static uint64_t last_log, quiet;
	uint64_t now = tdo_now_usec();

	uv_close((uv_handle_t *)tcp, free_unstarted);
	quiet++;
	if (last_log && now - last_log < NBD_REFUSED_LOG_MS * 1000ull)
		return;
	tdo_log(TDO_LOG_WARN, "nbd", "refused %llu connection%s: %llu open, the most allowed (NBD_MAX_CONNS %d); "
	        "said at most every %d s", (unsigned long long)quiet, quiet == 1 ? "" : "s",
	        (unsigned long long)d->met.conns_open, NBD_MAX_CONNS, NBD_REFUSED_LOG_MS / 1000);
	last_log = now;
	quiet = 0;
}

static void on_nbd_connection(uv_stream_t *server, int status)
{
	struct daemon *d = server->data;
	struct nbd_conn *c;

	if (status < 0) {
		tdo_log(TDO_LOG_WARN, "nbd", "accept: %s", uv_strerror(status));
		return;
	}
	c = calloc(1, sizeof *c);
	if (!c)
		return;
	c->d = d;
	c->id = ++next_conn_id;
	uv_tcp_init(d->loop, &c->tcp);
	c->tcp.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
		uv_close((uv_handle_t *)&c->tcp, free_unstarted);
		return;
	}
	if (d->met.conns_open >= NBD_MAX_CONNS) {
		refuse(d, &c->tcp); /* frees c */
		return;
	}
	conn_start(d, c);
}

int nbd_listen(struct daemon *d, const char *host, int port)
{
	d->nbd_listener.data = d;
	return tdo_tcp_listen(d->loop, &d->nbd_listener, host, port, on_nbd_connection, d->nbd_addr,
	                  sizeof d->nbd_addr, NULL);
}

static void listener_closed(uv_handle_t *h)
{
	(void)h;
}

void nbd_shutdown(struct daemon *d)
{
	if (!uv_is_closing((uv_handle_t *)&d->nbd_listener))
		uv_close((uv_handle_t *)&d->nbd_listener, listener_closed);
	tdo_list_foreach(l, &d->conns) {
		struct nbd_conn *c = tdo_list_item(l, struct nbd_conn, link);
		if (c->closing)
			continue;
		/* no new requests; those in flight complete and are answered */
		c->disc = true;
		if (c->reading) {
			uv_read_stop((uv_stream_t *)&c->tcp);
			c->reading = false;
		}
		c->graceful = true;
		if (c->inflight == 0)
			nbd_conn_close(c, "server shutting down");
	}
}

void nbd_abort(struct daemon *d)
{
	tdo_list_foreach(l, &d->conns) {
		struct nbd_conn *c = tdo_list_item(l, struct nbd_conn, link);
		c->graceful = false;
		nbd_conn_close(c, "server shutting down: deadline passed");
		/* a shutdown waiting for a client that does not read: cut it */
		if (c->shutting_down && !uv_is_closing((uv_handle_t *)&c->tcp))
			uv_close((uv_handle_t *)&c->tcp, on_closed);
	}
}

int nbd_conn_count(struct daemon *d, const char *name)
{
	int n = 0;

	tdo_list_foreach(l, &d->conns) {
		struct nbd_conn *c = tdo_list_item(l, struct nbd_conn, link);
		if (!c->closing && (!name || (c->name[0] && strcmp(c->name, name) == 0)))
			n++;
	}
	return n;
}

void nbd_conn_close_volume(struct daemon *d, const char *name, const char *why)
{
	/* nbd_conn_close takes nothing off the list: the close callback does */
	tdo_list_foreach(l, &d->conns) {
		struct nbd_conn *c = tdo_list_item(l, struct nbd_conn, link);
		if (!c->closing && c->name[0] && strcmp(c->name, name) == 0)
			nbd_conn_close(c, why);
	}
}
