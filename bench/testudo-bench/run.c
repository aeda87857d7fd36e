/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The load engine. DESIGN: one libuv loop drives CONNS connections with
 * QD request slots each; a slot's cookie is its index, so a reply finds
 * its request without a search. A slot issues its next operation as soon
 * as the previous one completes (closed loop), optionally held back by a
 * global issue schedule (--rate). Replies are parsed from a receive
 * buffer; a large READ payload is received straight into its slot's
 * buffer. Under --verify, no two operations of live connections touch
 * one 4 KiB block at a time, so every read has exactly one right answer
 * (or a newer write that was in flight when a connection dropped).
 * A dropped connection fails its in-flight requests (counted, never
 * retried: their outcome is unknown) and, with --reconnect, is dialled
 * again, trying the URIs in turn with back-off until the window closes.
 * What it must never do: count an operation as done before its reply, or
 * journal a write before the server acknowledged it.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

enum { C_DOWN, C_CONNECTING, C_UP, C_CLOSING };

struct run;
struct conn;

struct slot {
	struct conn *c;
	uint32_t idx;               /* the request cookie */
	bool busy;                  /* an operation occupies the slot */
	bool sending;               /* uv_write not yet called back */
	bool replied;               /* its reply (and payload) arrived */
	bool has_token;             /* --rate: its issue time has come */
	bool parked;                /* waiting for a busy block to be released */
	bool flush_wait;            /* waiting for its connection's FLUSH */
	uint16_t type;
	uint32_t len, nbd_err;
	uint64_t off, seq, t0;
	char *buf;
	struct nbd_request req;
	uv_write_t wr;
	uv_timer_t timer;
};

struct conn {
	struct run *r;
	int idx, state, uri;
	bool ever_up;
	union {
		uv_tcp_t tcp;
		uv_pipe_t pipe;
		uv_stream_t s;
		uv_handle_t h;
	} u;
	struct slot *slots;
	int inflight;               /* busy slots */
	/* reply parsing: unparsed bytes are rx[0..rx_len) */
	char rx[64 * 1024];
	size_t rx_len;
	struct slot *pl;            /* receiving this READ's payload */
	uint32_t pl_got;
	bool direct;                /* the last buffer handed out was pl's */
	uint64_t writes_since_flush;
	bool flushing;              /* a FLUSH is due or in flight: nothing else is issued */
	/* (re)connecting */
	uv_work_t work;
	int work_fd;
	struct tb_export ex;
	char err[256];
	uint64_t down_since;
	unsigned attempts;
	uv_timer_t retry;
	struct nbd_request disc;
	uv_write_t disc_wr;
};

struct run {
	const struct tb_opts *o;
	struct tb_result *res;
	uv_loop_t loop;
	struct conn *conns;
	struct tb_map *map;         /* NULL without --verify */
	struct tb_journal j;
	bool journal_open;
	uint64_t writer, seq;
	uint64_t issued_ops, issued_bytes, cursor, rng;
	uint64_t range_off, range_len, align, bs_weight_total;
	uint64_t start_ns, last_done_ns;
	double rate_next_ns;
	bool setup_done, started, stopping, finished;
	int conns_up_once;
	uv_timer_t stop_timer, tick_timer;
	uv_check_t check;
	/* this second, for the progress line */
	struct tb_hist *sec;
	uint64_t sec_ops, sec_bytes, sec_errs, tick_no;
	/* verify pass: the next block to read, and ranges to read again */
	uint64_t vp_next;
	uint64_t *retry_off;
	uint32_t *retry_len;
	size_t nretry, retry_cap;
	unsigned printed, nparked;
};

static void slot_next(struct slot *s);
static void conn_fail(struct conn *c, const char *why);
static void start_connect(struct conn *c);
static void maybe_finish(struct run *r);

static uint64_t rnd(struct run *r)
{
	/* xorshift64*: fast and good enough to place I/O */
	r->rng ^= r->rng >> 12;
	r->rng ^= r->rng << 25;
	r->rng ^= r->rng >> 27;
	return r->rng * 0x2545f4914f6cdd1dull;
}

static void abort_run(struct run *r, const char *why)
{
	if (!r->res->aborted) {
		r->res->aborted = true;
		snprintf(r->res->abort_reason, sizeof(r->res->abort_reason), "%.255s", why);
	}
	r->stopping = true;
	for (int i = 0; i < r->o->conns; i++)
		if (r->conns[i].state == C_UP)
			conn_fail(&r->conns[i], NULL);
	maybe_finish(r);
}

/* ---- per-block bookkeeping under --verify ---- */

static bool blocks_free(struct run *r, uint64_t off, uint32_t len)
{
	if (!r->map)
		return true;
	for (uint64_t b = (off - r->map->base) / TDO_VBLK_SIZE; b < (off - r->map->base + len) / TDO_VBLK_SIZE; b++)
		if (r->map->busy[b])
			return false;
	return true;
}

static void blocks_mark(struct run *r, uint64_t off, uint32_t len, uint8_t v)
{
	if (!r->map || !len)
		return;
	memset(r->map->busy + (off - r->map->base) / TDO_VBLK_SIZE, v, len / TDO_VBLK_SIZE);
}

/* ---- choosing the next operation ---- */

static uint32_t pick_bs(struct run *r)
{
	const struct tb_opts *o = r->o;
	if (o->nbs == 1)
		return o->bs[0];
	uint64_t x = rnd(r) % r->bs_weight_total;
	for (int i = 0; i < o->nbs; i++) {
		if (x < o->bs_weight[i])
			return o->bs[i];
		x -= o->bs_weight[i];
	}
	return o->bs[o->nbs - 1];
}

/* The verify pass: the next run of journaled blocks, up to 256 KiB. */
static bool pick_verify(struct run *r, struct slot *s)
{
	if (r->nretry) {
		r->nretry--;
		s->off = r->retry_off[r->nretry];
		s->len = r->retry_len[r->nretry];
		s->type = NBD_CMD_READ;
		return true;
	}
	struct tb_map *m = r->map;
	uint64_t limit = r->res->export_size / TDO_VBLK_SIZE;
	if (limit > m->nblocks)
		limit = m->nblocks;
	while (r->vp_next < limit && !m->acked[r->vp_next])
		r->vp_next++;
	if (r->vp_next >= limit)
		return false;
	uint64_t b0 = r->vp_next, b = b0;
	while (b < limit && m->acked[b] && b - b0 < 64)
		b++;
	r->vp_next = b;
	s->type = NBD_CMD_READ;
	s->off = b0 * TDO_VBLK_SIZE;
	s->len = (uint32_t)((b - b0) * TDO_VBLK_SIZE);
	return true;
}

/* Fill in S's next operation; false when the run has nothing more to
 * issue from this slot now (limits reached, or the blocks are busy: then
 * the slot is parked until a completion frees some). */
static bool pick(struct run *r, struct slot *s)
{
	const struct tb_opts *o = r->o;
	struct conn *c = s->c;
	if (o->rw == TB_RW_VERIFY_PASS)
		return pick_verify(r, s);
	/* --flush-every as fio's --fsync: once N writes were issued, the
	 * connection drains, sends one FLUSH alone, and goes on when it is
	 * answered. Before the limits: the last writes get their FLUSH too. */
	if (o->flush_every && !c->flushing && c->writes_since_flush >= o->flush_every)
		c->flushing = true;
	if (c->flushing) {
		if (c->inflight || c->writes_since_flush < o->flush_every) {
			s->flush_wait = true;     /* draining, or the FLUSH is in flight */
			return false;
		}
		c->writes_since_flush = 0;
		s->type = NBD_CMD_FLUSH;
		s->off = 0;
		s->len = 0;
		return true;
	}
	if ((o->ops && r->issued_ops >= o->ops) || (o->bytes && r->issued_bytes >= o->bytes))
		return false;
	bool read;
	switch (o->rw) {
	case TB_READ: case TB_RANDREAD: read = true; break;
	case TB_WRITE: case TB_RANDWRITE: read = false; break;
	default: read = (int)(rnd(r) % 100) < o->mix_read_pct; break;
	}
	uint32_t len = pick_bs(r);
	bool random = o->rw == TB_RANDREAD || o->rw == TB_RANDWRITE || o->rw == TB_RANDRW;
	uint64_t off = 0;
	for (int tries = 0;; tries++) {
		if (random) {
			uint64_t n = (r->range_len - len) / r->align + 1;
			off = r->range_off + (rnd(r) % n) * r->align;
		} else {
			if (r->cursor + len > r->range_len)
				r->cursor = 0;
			off = r->range_off + r->cursor;
		}
		if (blocks_free(r, off, len))
			break;
		if (!random || tries == 16) {
			s->parked = true;
			r->nparked++;
			return false;
		}
	}
	if (!random)
		r->cursor += len;
	s->type = read ? NBD_CMD_READ : NBD_CMD_WRITE;
	s->off = off;
	s->len = len;
	return true;
}

/* ---- sending ---- */

static void write_cb(uv_write_t *wr, int status);
static void complete(struct slot *s);

static void send_op(struct slot *s)
{
	struct run *r = s->c->r;
	struct conn *c = s->c;
	s->busy = true;
	s->sending = true;
	s->replied = false;
	s->nbd_err = 0;
	blocks_mark(r, s->off, s->len, 1);
	if (s->type == NBD_CMD_WRITE) {
		c->writes_since_flush++;
		s->seq = ++r->seq;
		if (r->map)
			tb_vblk_fill(s->buf, s->len, s->off, r->writer, s->seq);
	}
	if (s->type != NBD_CMD_FLUSH) {
		r->issued_ops++;
		r->issued_bytes += s->len;
	}
	uint16_t flags = (s->type == NBD_CMD_WRITE && r->o->fua) ? NBD_CMD_FLAG_FUA : 0;
	s->req = (struct nbd_request){ htobe32(NBD_REQUEST_MAGIC), htobe16(flags), htobe16(s->type),
				       s->idx, htobe64(s->off), htobe32(s->len) };
	uv_buf_t b[2] = { uv_buf_init((char *)&s->req, sizeof(s->req)), uv_buf_init(s->buf, s->len) };
	c->inflight++;
	s->t0 = uv_hrtime();
	int rc = uv_write(&s->wr, &c->u.s, b, s->type == NBD_CMD_WRITE ? 2 : 1, write_cb);
	if (rc < 0) {
		s->sending = false;
		conn_fail(c, uv_strerror(rc));
	}
}

static void rate_cb(uv_timer_t *t)
{
	struct slot *s = t->data;
	s->has_token = true;
	slot_next(s);
}

static void slot_next(struct slot *s)
{
	struct run *r = s->c->r;
	const struct tb_opts *o = r->o;
	if (s->busy || r->stopping || !r->started || s->c->state != C_UP)
		return;
	if (o->rate > 0 && !s->has_token) {
		if (uv_is_active((uv_handle_t *)&s->timer))
			return;
		double now = (double)uv_hrtime();
		if (r->rate_next_ns < now - 1e8)
			r->rate_next_ns = now - 1e8;   /* no catch-up burst after a stall */
		double due = r->rate_next_ns;
		r->rate_next_ns += 1e9 / o->rate;
		if (due > now + 5e5) {
			uv_timer_start(&s->timer, rate_cb, (uint64_t)((due - now) / 1e6 + 0.999), 0);
			return;
		}
		s->has_token = true;
	}
	s->parked = false;
	if (!pick(r, s)) {
		maybe_finish(r);
		return;
	}
	s->has_token = false;
	send_op(s);
}

static void kick_parked(struct run *r)
{
	if (!r->map || !r->nparked)
		return;
	r->nparked = 0;
	for (int i = 0; i < r->o->conns; i++)
		for (int q = 0; q < r->o->qd; q++)
			if (r->conns[i].slots[q].parked)
				slot_next(&r->conns[i].slots[q]);
}

/* ---- completions ---- */

static void finding(struct run *r, uint64_t off, enum tb_bad kind, uint64_t acked, uint64_t found)
{
	r->res->errs.bad[kind]++;
	bool pass = r->o->rw == TB_RW_VERIFY_PASS;
	if (!pass && r->printed >= 20)
		return;
	r->printed++;
	char what[64];
	if (found)
		snprintf(what, sizeof(what), "write #%" PRIu64, found);
	else
		snprintf(what, sizeof(what), "%s", kind == TB_MISSING ? "zeroes" : kind == TB_FOREIGN ?
			 "another writer's block" : kind == TB_MISPLACED ? "another offset's block" : "no valid header");
	fprintf(pass ? stdout : stderr,
		"LOST offset %" PRIu64 " (block %" PRIu64 "): %s; newest acknowledged write #%" PRIu64 ", found %s\n",
		off, off / TDO_VBLK_SIZE, tb_bad_name[kind], acked, what);
}

static void check_read(struct run *r, struct slot *s)
{
	bool pass = r->o->rw == TB_RW_VERIFY_PASS;
	for (uint32_t i = 0; i < s->len; i += TDO_VBLK_SIZE) {
		uint64_t off = s->off + i, found;
		uint64_t acked = r->map->acked[(off - r->map->base) / TDO_VBLK_SIZE];
		enum tb_bad k = tb_map_check(r->map, s->buf + i, off, r->writer, &found);
		if (pass) {
			r->res->checked++;
			if (k == TB_OK && found > acked)
				r->res->newer++;
			if (k != TB_OK)
				r->res->lost++;
		}
		if (k != TB_OK)
			finding(r, off, k, acked, found);
	}
}

static void complete(struct slot *s)
{
	struct conn *c = s->c;
	struct run *r = c->r;
	struct tb_result *res = r->res;
	uint64_t now = uv_hrtime(), lat = now - s->t0;
	uint64_t gap = now - r->last_done_ns;
	if (gap > res->longest_gap_ns)
		res->longest_gap_ns = gap;
	if ((double)gap > r->o->pause_ms * 1e6) {
		res->pauses++;
		res->pause_total_ns += gap;
	}
	r->last_done_ns = now;
	if (s->nbd_err) {
		res->errs.nbd[s->nbd_err < 128 ? s->nbd_err : 127]++;
		r->sec_errs++;
		if (r->o->rw == TB_RW_VERIFY_PASS) {
			/* a journaled block that cannot be read is lost */
			for (uint32_t i = 0; i < s->len; i += TDO_VBLK_SIZE) {
				res->checked++;
				res->lost++;
				fprintf(stdout, "LOST offset %" PRIu64 " (block %" PRIu64 "): read failed with %s\n",
					s->off + i, (s->off + i) / TDO_VBLK_SIZE, tb_nbd_err_name(s->nbd_err));
			}
		}
	} else {
		/* IOPS and latency are of reads and writes, as fio counts them;
		 * FLUSHes are counted on their own */
		if (s->type != NBD_CMD_FLUSH) {
			tb_hist_add(&res->lat, lat);
			tb_hist_add(r->sec, lat);
			r->sec_ops++;
			r->sec_bytes += s->len;
			res->ops++;
		}
		if (s->type == NBD_CMD_READ) {
			res->reads++;
			res->read_bytes += s->len;
			tb_hist_add(&res->lat_read, lat);
			if (r->map)
				check_read(r, s);
		} else if (s->type == NBD_CMD_WRITE) {
			res->writes++;
			res->write_bytes += s->len;
			tb_hist_add(&res->lat_write, lat);
			if (r->map) {
				tb_map_ack(r->map, s->off, s->len, s->seq);
				tb_journal_add(&r->j, s->off, s->len, s->seq);
			}
		} else {
			res->flushes++;
			tb_hist_add(&res->lat_flush, lat);
		}
	}
	blocks_mark(r, s->off, s->len, 0);
	s->busy = false;
	c->inflight--;
	bool flush_done = s->type == NBD_CMD_FLUSH && c->flushing;
	if (flush_done)
		c->flushing = false;
	slot_next(s);
	if (flush_done || (c->flushing && !c->inflight)) {
		/* the FLUSH was answered, or the drain is over: wake the others */
		for (int q = 0; q < r->o->qd; q++)
			if (c->slots[q].flush_wait) {
				c->slots[q].flush_wait = false;
				slot_next(&c->slots[q]);
			}
	}
	kick_parked(r);
	maybe_finish(r);
}

static void write_cb(uv_write_t *wr, int status)
{
	struct slot *s = (struct slot *)((char *)wr - offsetof(struct slot, wr));
	s->sending = false;
	if (status < 0) {
		if (status != UV_ECANCELED)
			conn_fail(s->c, uv_strerror(status));
		return;
	}
	if (s->replied && s->c->state == C_UP)
		complete(s);
}

static void reply_done(struct slot *s, uint32_t err)
{
	s->replied = true;
	s->nbd_err = err;
	if (!s->sending)
		complete(s);
}

/* Parse what is in rx; returns false if the connection was failed. */
static bool parse(struct conn *c)
{
	size_t p = 0;
	for (;;) {
		if (c->pl) {
			struct slot *s = c->pl;
			size_t take = c->rx_len - p;
			if (take > s->len - c->pl_got)
				take = s->len - c->pl_got;
			memcpy(s->buf + c->pl_got, c->rx + p, take);
			p += take;
			c->pl_got += (uint32_t)take;
			if (c->pl_got < s->len)
				break;
			c->pl = NULL;
			reply_done(s, 0);
			if (c->state != C_UP)
				return false;
			continue;
		}
		if (c->rx_len - p < sizeof(struct nbd_simple_reply))
			break;
		struct nbd_simple_reply h;
		memcpy(&h, c->rx + p, sizeof(h));
		p += sizeof(h);
		uint64_t cookie = h.sr_cookie;
		if (be32toh(h.sr_magic) != NBD_SIMPLE_REPLY_MAGIC) {
			conn_fail(c, "bad reply magic from server");
			return false;
		}
		if (cookie >= (uint64_t)c->r->o->qd || !c->slots[cookie].busy || c->slots[cookie].replied) {
			conn_fail(c, "reply for a request not in flight");
			return false;
		}
		struct slot *s = &c->slots[cookie];
		uint32_t err = be32toh(h.sr_error);
		if (s->type == NBD_CMD_READ && err == 0 && s->len) {
			c->pl = s;
			c->pl_got = 0;
			continue;
		}
		reply_done(s, err);
		if (c->state != C_UP)
			return false;
	}
	memmove(c->rx, c->rx + p, c->rx_len - p);
	c->rx_len -= p;
	return true;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)hint;
	struct conn *c = h->data;
	if (c->pl && c->rx_len == 0 && c->pl->len - c->pl_got >= 4096) {
		c->direct = true;
		*b = uv_buf_init(c->pl->buf + c->pl_got, c->pl->len - c->pl_got);
	} else {
		c->direct = false;
		*b = uv_buf_init(c->rx + c->rx_len, (unsigned)(sizeof(c->rx) - c->rx_len));
	}
}

/* Acknowledge what we received at once. A server that does not set
 * TCP_NODELAY holds its next small reply until our ACK arrives; Linux
 * delays that ACK up to 40 ms when we have nothing to send, which is the
 * case while a connection drains before a FLUSH. TCP_QUICKACK does not
 * stick, so it is set again after every read. */
static void quickack(struct conn *c)
{
	uv_os_fd_t fd;
	int one = 1;
	if (!c->r->o->uri[c->uri].unix_socket && uv_fileno(&c->u.h, &fd) == 0)
		setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	(void)b;
	struct conn *c = st->data;
	if (n < 0) {
		conn_fail(c, n == UV_EOF ? "server closed the connection" : uv_strerror((int)n));
		return;
	}
	if (n == 0 || c->state != C_UP)
		return;
	if (c->direct) {
		quickack(c);
		c->pl_got += (uint32_t)n;
		if (c->pl_got == c->pl->len) {
			struct slot *s = c->pl;
			c->pl = NULL;
			reply_done(s, 0);
		}
		return;
	}
	c->rx_len += (size_t)n;
	quickack(c);
	parse(c);
}

/* ---- connections ---- */

static void closed_cb(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct run *r = c->r;
	/* everything still in flight is lost with the connection */
	for (int q = 0; q < r->o->qd; q++) {
		struct slot *s = &c->slots[q];
		uv_timer_stop(&s->timer);
		s->has_token = false;
		s->parked = false;
		if (!s->busy)
			continue;
		r->res->errs.disconnect++;
		if (s->type == NBD_CMD_WRITE && r->map) {
			/* its outcome is unknown: it may land now, or later */
			if (tb_map_doubt(r->map, s->off, s->len, s->seq)) {
				fprintf(stderr, "testudo-bench: out of memory\n");
				exit(2);
			}
			if (r->journal_open)
				tb_journal_add(&r->j, s->off, s->len | TDO_BJ_IN_DOUBT, s->seq);
			r->res->in_doubt++;
		}
		if (r->o->rw == TB_RW_VERIFY_PASS && s->type == NBD_CMD_READ) {
			if (r->nretry == r->retry_cap) {
				size_t cap = r->retry_cap ? r->retry_cap * 2 : 256;
				uint64_t *o2 = realloc(r->retry_off, cap * sizeof(*o2));
				uint32_t *l2 = o2 ? realloc(r->retry_len, cap * sizeof(*l2)) : NULL;
				if (!o2 || !l2) {
					fprintf(stderr, "testudo-bench: out of memory\n");
					exit(2);
				}
				r->retry_off = o2;
				r->retry_len = l2;
				r->retry_cap = cap;
			}
			r->retry_off[r->nretry] = s->off;
			r->retry_len[r->nretry++] = s->len;
		}
		blocks_mark(r, s->off, s->len, 0);
		s->busy = false;
	}
	c->inflight = 0;
	c->flushing = false;
	for (int q = 0; q < r->o->qd; q++)
		c->slots[q].flush_wait = false;
	c->pl = NULL;
	c->rx_len = 0;
	c->state = C_DOWN;
	if (r->stopping) {
		maybe_finish(r);
		return;
	}
	kick_parked(r);
	start_connect(c);
}

/* Close C; WHY (NULL when we close it on purpose) is reported. */
static void conn_fail(struct conn *c, const char *why)
{
	struct run *r = c->r;
	if (c->state != C_UP)
		return;
	c->state = C_CLOSING;
	if (why && !r->stopping) {
		fprintf(stderr, "testudo-bench: connection %d to %s: %s\n", c->idx, r->o->uri[c->uri].text, why);
		if (r->o->reconnect_s <= 0) {
			r->res->aborted = true;
			snprintf(r->res->abort_reason, sizeof(r->res->abort_reason), "connection to %.128s lost: %.100s",
				 r->o->uri[c->uri].text, why);
			r->stopping = true;
			for (int i = 0; i < r->o->conns; i++)
				if (&r->conns[i] != c && r->conns[i].state == C_UP)
					conn_fail(&r->conns[i], NULL);
		} else {
			c->down_since = uv_hrtime();
			c->attempts = 0;
			c->uri = (c->uri + 1) % r->o->nuri;   /* try the next node first */
		}
	}
	uv_read_stop(&c->u.s);
	uv_close(&c->u.h, closed_cb);
}

static void start_run(struct run *r);

static void connect_work(uv_work_t *w)
{
	struct conn *c = w->data;
	c->work_fd = tb_nbd_connect(&c->r->o->uri[c->uri], c->r->o->connect_timeout_ms, &c->ex,
				    c->err, sizeof(c->err));
}

static void retry_cb(uv_timer_t *t)
{
	struct conn *c = t->data;
	if (c->r->stopping) {
		maybe_finish(c->r);
		return;
	}
	start_connect(c);
}

static bool export_usable(struct conn *c)
{
	struct run *r = c->r;
	const struct tb_opts *o = r->o;
	char m[600];
	uint16_t f = c->ex.flags;
	bool writes = o->rw == TB_WRITE || o->rw == TB_RANDWRITE || o->rw == TB_RANDRW;
	const char *why = NULL;
	if (r->res->export_size && c->ex.size != r->res->export_size)
		why = "export size differs from the first node's";
	else if (writes && (f & NBD_FLAG_READ_ONLY))
		why = "export is read-only";
	else if (o->fua && !(f & NBD_FLAG_SEND_FUA))
		why = "server does not support FUA";
	else if (o->flush_every && !(f & NBD_FLAG_SEND_FLUSH))
		why = "server does not support FLUSH";
	if (!why)
		return true;
	snprintf(m, sizeof(m), "%s: %s", o->uri[c->uri].text, why);
	abort_run(r, m);
	return false;
}

static void connect_after(uv_work_t *w, int status)
{
	struct conn *c = w->data;
	struct run *r = c->r;
	const struct tb_opts *o = r->o;
	int fd = status < 0 ? status : c->work_fd;
	if (r->stopping) {
		/* the run ended while this connection was being made: not a failure */
		if (fd >= 0)
			close(fd);
		c->state = C_DOWN;
		maybe_finish(r);
		return;
	}
	if (fd < 0) {
		r->res->connect_failures++;
		c->state = C_DOWN;
		uint64_t now = uv_hrtime();
		if (!c->down_since)
			c->down_since = now;
		if (o->reconnect_s <= 0 || (double)(now - c->down_since) > o->reconnect_s * 1e9) {
			abort_run(r, c->err[0] ? c->err : "cannot connect");
			return;
		}
		if (c->attempts++ == 0 || c->attempts % 10 == 0)
			fprintf(stderr, "testudo-bench: connection %d: %s; retrying\n", c->idx, c->err);
		c->uri = (c->uri + 1) % o->nuri;
		uint64_t delay = 25u << (c->attempts < 5 ? c->attempts : 5);   /* 50 ms .. 800 ms */
		uv_timer_start(&c->retry, retry_cb, delay, 0);
		return;
	}
	if (!r->res->export_size)
		r->res->export_size = c->ex.size;
	int rc = o->uri[c->uri].unix_socket ? uv_pipe_init(&r->loop, &c->u.pipe, 0) : uv_tcp_init(&r->loop, &c->u.tcp);
	if (!rc)
		rc = o->uri[c->uri].unix_socket ? uv_pipe_open(&c->u.pipe, fd) : uv_tcp_open(&c->u.tcp, fd);
	c->u.h.data = c;
	if (rc) {
		close(fd);
		abort_run(r, uv_strerror(rc));
		return;
	}
	c->state = C_UP;
	uv_read_start(&c->u.s, alloc_cb, read_cb);
	if (!export_usable(c))
		return;
	if (c->ever_up) {
		r->res->reconnects++;
		fprintf(stderr, "testudo-bench: connection %d reconnected to %s after %.2f s\n", c->idx,
			o->uri[c->uri].text, (double)(uv_hrtime() - c->down_since) / 1e9);
	}
	c->ever_up = true;
	c->down_since = 0;
	c->attempts = 0;
	if (!r->started) {
		if (++r->conns_up_once == o->conns && r->setup_done)
			start_run(r);
		return;
	}
	for (int q = 0; q < o->qd; q++)
		slot_next(&c->slots[q]);
}

static void start_connect(struct conn *c)
{
	c->state = C_CONNECTING;
	c->work.data = c;
	uv_queue_work(&c->r->loop, &c->work, connect_work, connect_after);
}

/* ---- the run's clock, progress and end ---- */

static void stop_cb(uv_timer_t *t)
{
	struct run *r = t->data;
	r->stopping = true;
	for (int i = 0; i < r->o->conns; i++)
		for (int q = 0; q < r->o->qd; q++) {
			uv_timer_stop(&r->conns[i].slots[q].timer);
			r->conns[i].slots[q].parked = false;
		}
	maybe_finish(r);
}

/* A request unanswered for --io-timeout: the server is frozen or cut
 * off; drop the connection (and reconnect, if asked). */
static void check_timeouts(struct run *r)
{
	uint64_t now = uv_hrtime(), limit = (uint64_t)(r->o->io_timeout_s * 1e9);
	for (int i = 0; i < r->o->conns; i++) {
		struct conn *c = &r->conns[i];
		if (c->state != C_UP || !c->inflight)
			continue;
		for (int q = 0; q < r->o->qd; q++) {
			struct slot *s = &c->slots[q];
			if (s->busy && !s->replied && now - s->t0 > limit) {
				char why[80];
				snprintf(why, sizeof(why), "no reply for %.1f s", (double)(now - s->t0) / 1e9);
				conn_fail(c, why);
				break;
			}
		}
	}
}

static void tick_cb(uv_timer_t *t)
{
	struct run *r = t->data;
	r->tick_no++;
	if (r->o->io_timeout_s > 0)
		check_timeouts(r);
	if (r->journal_open)
		tb_journal_sync_async(&r->j, &r->loop);
	if (r->o->progress) {
		fprintf(stderr, "%5" PRIu64 "s  %9.0f IOPS  %9.1f MB/s  p99 %8.1f us  errors %" PRIu64 "%s\n",
			r->tick_no, (double)r->sec_ops, (double)r->sec_bytes / 1e6,
			(double)tb_hist_quantile(r->sec, 0.99) / 1e3, r->sec_errs,
			r->sec_ops ? "" : "  (no completions)");
	}
	tb_hist_reset(r->sec);
	r->sec_ops = r->sec_bytes = r->sec_errs = 0;
}

static void check_cb(uv_check_t *ch)
{
	struct run *r = ch->data;
	if (r->journal_open && r->j.len)
		tb_journal_write(&r->j);
}

static void start_run(struct run *r)
{
	const struct tb_opts *o = r->o;
	r->started = true;
	r->start_ns = r->last_done_ns = uv_hrtime();
	r->rate_next_ns = (double)r->start_ns;
	if (o->time_s > 0)
		uv_timer_start(&r->stop_timer, stop_cb, (uint64_t)(o->time_s * 1000), 0);
	uv_timer_start(&r->tick_timer, tick_cb, 1000, 1000);
	for (int i = 0; i < o->conns; i++)
		for (int q = 0; q < o->qd; q++)
			slot_next(&r->conns[i].slots[q]);
	maybe_finish(r);
}

static void disc_cb(uv_write_t *w, int status)
{
	(void)status;
	struct conn *c = w->data;
	if (!uv_is_closing(&c->u.h))
		uv_close(&c->u.h, NULL);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h) && h->type != UV_TCP && h->type != UV_NAMED_PIPE)
		uv_close(h, NULL);
}

/* End the run when nothing is in flight and nothing more will be issued. */
static void maybe_finish(struct run *r)
{
	const struct tb_opts *o = r->o;
	if (r->finished || (!r->started && !r->stopping))
		return;
	for (int i = 0; i < o->conns; i++) {
		struct conn *c = &r->conns[i];
		if (c->state == C_CONNECTING || c->state == C_CLOSING || c->inflight)
			return;
		if (r->stopping)
			continue;
		if (c->state == C_DOWN)
			return;          /* it will reconnect */
		for (int q = 0; q < o->qd; q++)
			if (c->slots[q].parked || uv_is_active((uv_handle_t *)&c->slots[q].timer))
				return;
	}
	r->finished = true;
	uint64_t now = uv_hrtime();
	r->res->elapsed_s = r->started ? (double)(now - r->start_ns) / 1e9 : 0;
	if (r->started) {
		/* an outage still going on when the run ends is a pause too */
		uint64_t gap = now - r->last_done_ns;
		if (gap > r->res->longest_gap_ns) {
			r->res->longest_gap_ns = gap;
			r->res->gap_open_at_end = (double)gap > r->o->pause_ms * 1e6;
		}
		if ((double)gap > r->o->pause_ms * 1e6) {
			r->res->pauses++;
			r->res->pause_total_ns += gap;
		}
	}
	for (int i = 0; i < o->conns; i++) {
		struct conn *c = &r->conns[i];
		if (c->state != C_UP)
			continue;
		c->state = C_CLOSING;
		uv_read_stop(&c->u.s);
		c->disc = (struct nbd_request){ htobe32(NBD_REQUEST_MAGIC), 0, htobe16(NBD_CMD_DISC), 0, 0, 0 };
		uv_buf_t b = uv_buf_init((char *)&c->disc, sizeof(c->disc));
		c->disc_wr.data = c;
		if (uv_write(&c->disc_wr, &c->u.s, &b, 1, disc_cb) < 0)
			uv_close(&c->u.h, NULL);
	}
	uv_walk(&r->loop, close_walk, NULL);
}

int tb_run(const struct tb_opts *o, struct tb_map *vmap, uint64_t writer, struct tb_result *res)
{
	struct run *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	int rc = uv_loop_init(&r->loop);
	if (rc) {
		free(r);
		return rc;
	}
	r->o = o;
	r->res = res;
	r->writer = writer;
	r->rng = o->seed ? o->seed * 0x9e3779b97f4a7c15ull | 1 : 0x853c49e6748fea9bull;
	tb_hist_reset(&res->lat);
	tb_hist_reset(&res->lat_read);
	tb_hist_reset(&res->lat_write);
	tb_hist_reset(&res->lat_flush);
	r->sec = malloc(sizeof(*r->sec));
	r->conns = calloc((size_t)o->conns, sizeof(*r->conns));
	uint32_t maxbs = o->rw == TB_RW_VERIFY_PASS ? 64 * TDO_VBLK_SIZE : 0;
	for (int i = 0; i < o->nbs; i++) {
		if (o->bs[i] > maxbs)
			maxbs = o->bs[i];
		r->bs_weight_total += o->bs_weight[i];
	}
	if (!r->sec || !r->conns) {
		fprintf(stderr, "testudo-bench: out of memory\n");
		exit(2);
	}
	tb_hist_reset(r->sec);
	uv_timer_init(&r->loop, &r->stop_timer);
	uv_timer_init(&r->loop, &r->tick_timer);
	uv_check_init(&r->loop, &r->check);
	r->stop_timer.data = r->tick_timer.data = r->check.data = r;
	uv_check_start(&r->check, check_cb);
	for (int i = 0; i < o->conns; i++) {
		struct conn *c = &r->conns[i];
		c->r = r;
		c->idx = i;
		c->uri = 0;
		c->slots = calloc((size_t)o->qd, sizeof(*c->slots));
		if (!c->slots) {
			fprintf(stderr, "testudo-bench: out of memory\n");
			exit(2);
		}
		uv_timer_init(&r->loop, &c->retry);
		c->retry.data = c;
		for (int q = 0; q < o->qd; q++) {
			struct slot *s = &c->slots[q];
			s->c = c;
			s->idx = (uint32_t)q;
			if (posix_memalign((void **)&s->buf, 4096, maxbs ? maxbs : 4096)) {
				fprintf(stderr, "testudo-bench: out of memory for %d x %u-byte buffers\n",
					o->conns * o->qd, maxbs);
				exit(2);
			}
			/* incompressible data for writes that are not stamped */
			uint64_t x = r->rng + (uint64_t)i * 7919 + (uint64_t)q;
			for (uint32_t k = 0; k + 8 <= maxbs; k += 8) {
				x ^= x << 13; x ^= x >> 7; x ^= x << 17;
				memcpy(s->buf + k, &x, 8);
			}
			uv_timer_init(&r->loop, &s->timer);
			s->timer.data = s;
		}
	}
	/* the first connection learns the export size; the others follow */
	r->map = o->journal || o->rw == TB_RW_VERIFY_PASS ? vmap : NULL;
	start_connect(&r->conns[0]);
	/* connect the rest once the size is known: run the loop until then */
	while (!res->export_size && !res->aborted)
		uv_run(&r->loop, UV_RUN_ONCE);
	if (!res->aborted) {
		uint64_t size = res->export_size;
		r->range_off = o->range_off;
		r->range_len = o->range_len ? o->range_len : size > o->range_off ? size - o->range_off : 0;
		r->align = (o->nbs == 1 && !vmap) ? o->bs[0] : 4096;
		for (int i = 0; i < o->nbs; i++)
			if (o->bs[i] % r->align)
				r->align = 512;
		char m[512] = "";
		if (o->rw != TB_RW_VERIFY_PASS && (r->range_off + r->range_len > size || r->range_len < maxbs))
			snprintf(m, sizeof(m), "range %" PRIu64 ":%" PRIu64 " does not fit the export (%" PRIu64 " bytes) or is smaller than the block size",
				 r->range_off, r->range_len, size);
		else if (o->journal && o->rw != TB_RW_VERIFY_PASS) {
			int jr = tb_map_init(vmap, r->range_off, r->range_len);
			if (jr)
				snprintf(m, sizeof(m), "--verify over %" PRIu64 " bytes: %s", r->range_len,
					 jr == -EFBIG ? "range too large (at most 1 TiB)" : strerror(-jr));
			else if ((jr = tb_journal_create(&r->j, o->journal, writer, size, o->uri[0].export_name)))
				snprintf(m, sizeof(m), "journal %s: %s", o->journal, strerror(-jr));
			else
				r->journal_open = true;
		}
		if (m[0]) {
			abort_run(r, m);
		} else {
			r->setup_done = true;
			for (int i = 1; i < o->conns; i++)
				start_connect(&r->conns[i]);
			if (r->conns_up_once == o->conns)
				start_run(r);
		}
	}
	uv_run(&r->loop, UV_RUN_DEFAULT);
	if (r->journal_open && (rc = tb_journal_close(&r->j)) < 0) {
		fprintf(stderr, "testudo-bench: journal: %s\n", strerror(-rc));
		res->aborted = true;
	}
	res->journal_records = r->j.records;
	uv_loop_close(&r->loop);
	for (int i = 0; i < o->conns; i++) {
		for (int q = 0; q < o->qd; q++)
			free(r->conns[i].slots[q].buf);
		free(r->conns[i].slots);
	}
	free(r->conns);
	free(r->sec);
	free(r->retry_off);
	free(r->retry_len);
	free(r);
	return 0;
}
