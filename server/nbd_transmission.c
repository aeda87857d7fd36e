/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the transmission phase. Each 28-byte request goes through one
 * validator (magic, command, flags, length, range, alignment, read-only)
 * before the volume tier sees it; a rejected write still has its payload
 * read and dropped, so the stream stays in step. Accepted requests go
 * through the connection's volume handle (testudo/vtier.h) with a
 * callback, and are answered in completion order, matched by cookie:
 * simple replies unless the client negotiated structured ones. The volume
 * tier decides where a request goes (this node as primary, replicated, or
 * forwarded to the primary); this file never sees the engine.
 *
 * Every write is durable on every in-sync copy when it completes, so FUA
 * needs nothing extra, and FLUSH waits for every write submitted before
 * it on any connection (the primary's flush is device-wide), which is
 * what CAN_MULTI_CONN promises.
 *
 * Must never: answer a request twice, send structured replies to a client
 * that did not ask, or let a bad length reach malloc.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nbd_internal.h"
#include "testudo/vtier.h"

struct txreq {
	struct nbd_conn *c;
	uint16_t type, flags;
	uint64_t cookie, offset;
	uint32_t length;
	uint8_t *buf;               /* read data or write payload */
	uint64_t t0;
	int op;                     /* enum met_op */
};

uint32_t nbd_errno(int err)
{
	switch (err) {
	case 0: return 0;
	case -EPERM: case -EROFS: return NBD_EPERM;
	case -ENOMEM: return NBD_ENOMEM;
	case -EINVAL: return NBD_EINVAL;
	case -ENOSPC: case -EDQUOT: case -EFBIG: case TDO_ENOSPACE: return NBD_ENOSPC;
	case -EOVERFLOW: return NBD_EOVERFLOW;
	case -ENOTSUP: return NBD_ENOTSUP;
	case -ESHUTDOWN: return NBD_ESHUTDOWN;
	default: return NBD_EIO;   /* -EIO, TDO_EPOISON, a vanished volume, ... */
	}
}

static int met_op_of(uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ: return MET_READ;
	case NBD_CMD_WRITE: return MET_WRITE;
	case NBD_CMD_FLUSH: return MET_FLUSH;
	case NBD_CMD_TRIM: return MET_TRIM;
	case NBD_CMD_WRITE_ZEROES: return MET_ZERO;
	case NBD_CMD_CACHE: return MET_CACHE;
	default: return MET_BLOCK_STATUS;
	}
}

/* ---- replies ------------------------------------------------------------ */

struct reply_out {
	union {
		struct nbd_simple_reply s;
		struct {
			struct nbd_structured_reply h;
			uint64_t offset;    /* OFFSET_DATA */
		} __attribute__((packed)) sd;
		struct {
			struct nbd_structured_reply h;
			uint32_t error;
			uint16_t msglen;
		} __attribute__((packed)) se;
	} u;
};

/* Requests that fail are logged one line each, up to this many a second
 * per connection; the rest are counted, and the count is logged when the
 * second is over (or the connection closes). A device that fails every
 * write must not turn the log into a second copy of the traffic. */
#define NBD_ERR_LOG_MAX 10

void conn_log_quiet_errors(struct nbd_conn *c)
{
	if (c->err_quiet)
		tdo_log(TDO_LOG_WARN, "nbd", "volume %s: %u more requests failed and were not logged one by one",
		        c->name, c->err_quiet);
	c->err_quiet = 0;
}

static void finish(struct txreq *r, uint32_t nerr, int cause)
{
	struct nbd_conn *c = r->c;
	uint64_t now = tdo_now_usec();

	met_record(c->met, r->op, now - r->t0,
	           r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE ? r->length : 0, nerr ? 1 : 0);
	if (nerr && cause) {
		if (now - c->err_window >= 1000000) {
			conn_log_quiet_errors(c);
			c->err_window = now;
			c->err_logged = 0;
		}
		if (c->err_logged < NBD_ERR_LOG_MAX) {
			c->err_logged++;
			tdo_log(TDO_LOG_WARN, "nbd", "volume %s: %s at offset %llu length %u failed: %s (NBD error %u)",
			        c->name, met_op_name(r->op), (unsigned long long)r->offset, r->length,
			        tdo_strerror(cause), nerr);
		} else {
			c->err_quiet++;
		}
	}
	c->inflight--;
	free(r);
	conn_request_done(c);
}

/* A reply without data: simple, or one structured NONE/ERROR chunk. */
static void reply_plain(struct txreq *r, uint32_t nerr)
{
	struct nbd_conn *c = r->c;
	struct reply_out *o = calloc(1, sizeof *o);
	uv_buf_t b;

	if (!o) {
		conn_close(c, "out of memory");
		return;
	}
	if (!c->structured) {
		o->u.s.magic = htobe32(NBD_SIMPLE_REPLY_MAGIC);
		o->u.s.error = htobe32(nerr);
		o->u.s.cookie = r->cookie;  /* echoed as received */
		b = uv_buf_init((char *)&o->u.s, sizeof o->u.s);
	} else if (!nerr) {
		o->u.sd.h.magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
		o->u.sd.h.flags = htobe16(NBD_REPLY_FLAG_DONE);
		o->u.sd.h.type = htobe16(NBD_REPLY_TYPE_NONE);
		o->u.sd.h.cookie = r->cookie;
		o->u.sd.h.length = 0;
		b = uv_buf_init((char *)&o->u.sd.h, sizeof o->u.sd.h);
	} else {
		o->u.se.h.magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
		o->u.se.h.flags = htobe16(NBD_REPLY_FLAG_DONE);
		o->u.se.h.type = htobe16(NBD_REPLY_TYPE_ERROR);
		o->u.se.h.cookie = r->cookie;
		o->u.se.h.length = htobe32(6);
		o->u.se.error = htobe32(nerr);
		o->u.se.msglen = 0;
		b = uv_buf_init((char *)&o->u.se, sizeof o->u.se);
	}
	conn_send(c, &b, 1, o, NULL);
}

static void reply_read(struct txreq *r)
{
	struct nbd_conn *c = r->c;
	struct reply_out *o = calloc(1, sizeof *o);
	uv_buf_t b[2];

	if (!o) {
		free(r->buf);
		conn_close(c, "out of memory");
		return;
	}
	if (!c->structured) {
		o->u.s.magic = htobe32(NBD_SIMPLE_REPLY_MAGIC);
		o->u.s.error = 0;
		o->u.s.cookie = r->cookie;
		b[0] = uv_buf_init((char *)&o->u.s, sizeof o->u.s);
	} else {
		o->u.sd.h.magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
		o->u.sd.h.flags = htobe16(NBD_REPLY_FLAG_DONE);
		o->u.sd.h.type = htobe16(NBD_REPLY_TYPE_OFFSET_DATA);
		o->u.sd.h.cookie = r->cookie;
		o->u.sd.h.length = htobe32(8 + r->length);
		o->u.sd.offset = htobe64(r->offset);
		b[0] = uv_buf_init((char *)&o->u.sd, sizeof o->u.sd);
	}
	b[1] = uv_buf_init((char *)r->buf, r->length);
	conn_send(c, b, 2, o, r->buf); /* both freed once written */
	r->buf = NULL;
}

/* ---- engine completions --------------------------------------------------- */

static void rw_done(void *arg, int status)
{
	struct txreq *r = arg;

	if (r->type == NBD_CMD_READ && !status) {
		reply_read(r);
		finish(r, 0, 0);
		return;
	}
	free(r->buf);
	r->buf = NULL;
	reply_plain(r, nbd_errno(status));
	finish(r, nbd_errno(status), status);
}

struct bs_ctx {
	uint8_t *out;
	uint32_t n, cap;
	bool one;
};

static int bs_extent(void *arg, uint64_t off, uint64_t len, unsigned state)
{
	struct bs_ctx *x = arg;
	struct nbd_block_descriptor d;

	(void)off;
	if (x->n == x->cap)
		return 1;
	while (len) {
		uint32_t l = len > 0x80000000u ? 0x80000000u : (uint32_t)len;
		d.length = htobe32(l);
		d.status_flags = htobe32((state & TDO_MAP_HOLE ? NBD_STATE_HOLE : 0) |
		                         (state & TDO_MAP_ZERO ? NBD_STATE_ZERO : 0));
		memcpy(x->out + sizeof(struct nbd_structured_reply) + 4 + (size_t)x->n * sizeof d, &d, sizeof d);
		x->n++;
		len -= l;
		if (x->one || x->n == x->cap)
			return 1;
	}
	return 0;
}

static void do_block_status(struct txreq *r)
{
	struct nbd_conn *c = r->c;
	struct bs_ctx x = { 0 };
	struct nbd_structured_reply *h;
	uint32_t id = htobe32(NBD_META_ID_BASE_ALLOCATION);
	uint64_t len = r->length;
	uv_buf_t b;

	if (r->offset + len > c->size)
		len = c->size - r->offset;
	x.cap = 1024;
	x.one = r->flags & NBD_CMD_FLAG_REQ_ONE;
	/* one buffer: reply header (20) is built in front of the payload */
	x.out = malloc(sizeof *h + 4 + (size_t)x.cap * sizeof(struct nbd_block_descriptor));
	if (!x.out) {
		reply_plain(r, NBD_ENOMEM);
		finish(r, NBD_ENOMEM, -ENOMEM);
		return;
	}
	int err = tdo_vhandle_map(c->vh, r->offset, len, bs_extent, &x);
	if (err < 0) { /* > 0: bs_extent stopped the walk */
		free(x.out);
		reply_plain(r, nbd_errno(err));
		finish(r, nbd_errno(err), err);
		return;
	}
	h = (struct nbd_structured_reply *)(void *)x.out;
	h->magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
	h->flags = htobe16(NBD_REPLY_FLAG_DONE);
	h->type = htobe16(NBD_REPLY_TYPE_BLOCK_STATUS);
	h->cookie = r->cookie;
	h->length = htobe32(4 + x.n * (uint32_t)sizeof(struct nbd_block_descriptor));
	memcpy(x.out + sizeof *h, &id, 4);
	b = uv_buf_init((char *)x.out, (unsigned)(sizeof *h + 4 + x.n * sizeof(struct nbd_block_descriptor)));
	conn_send(c, &b, 1, x.out, NULL);
	finish(r, 0, 0);
}

/* ---- validation and dispatch ---------------------------------------------- */

/* 0, or the NBD error to answer with. Sets *CLOSE for what cannot be
 * answered in step (an impossible write length). */
static uint32_t validate(struct nbd_conn *c, const struct txreq *r, bool *close)
{
	uint16_t allowed = 0;
	bool ranged = true;

	*close = false;
	switch (r->type) {
	case NBD_CMD_READ:
		allowed = NBD_CMD_FLAG_DF;
		if (r->length > NBD_MAX_PAYLOAD)
			return NBD_EOVERFLOW;
		break;
	case NBD_CMD_WRITE:
		allowed = NBD_CMD_FLAG_FUA;
		if (r->length > NBD_MAX_PAYLOAD) {
			*close = true;
			return NBD_EINVAL;
		}
		break;
	case NBD_CMD_FLUSH:
		ranged = false;
		if (r->offset || r->length)
			return NBD_EINVAL;
		break;
	case NBD_CMD_TRIM:
		allowed = NBD_CMD_FLAG_FUA;
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
		break;
	case NBD_CMD_CACHE:
		break;
	case NBD_CMD_BLOCK_STATUS:
		allowed = NBD_CMD_FLAG_REQ_ONE;
		if (!c->structured || !c->meta_base)
			return NBD_EINVAL; /* no context was negotiated */
		break;
	default:
		return NBD_EINVAL;
	}
	if (r->flags & ~allowed)
		return NBD_EINVAL;
	if (!ranged)
		return 0;
	if (r->length == 0)
		return NBD_EINVAL;
	if (r->offset % NBD_MIN_BLOCK || r->length % NBD_MIN_BLOCK)
		return NBD_EINVAL;
	if (r->offset > c->size || r->length > c->size - r->offset)
		return r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
	if ((c->tflags & NBD_FLAG_READ_ONLY) &&
	    (r->type == NBD_CMD_WRITE || r->type == NBD_CMD_TRIM || r->type == NBD_CMD_WRITE_ZEROES))
		return NBD_EPERM;
	return 0;
}

static void submit(struct txreq *r)
{
	struct nbd_conn *c = r->c;
	int op, err = 0;
	unsigned flags = 0;

	switch (r->type) {
	case NBD_CMD_CACHE:
		/* reads come from the device, with no cache of ours to warm */
		reply_plain(r, 0);
		finish(r, 0, 0);
		return;
	case NBD_CMD_BLOCK_STATUS:
		do_block_status(r);
		return;
	case NBD_CMD_READ:
		op = TDO_RMOP_READ;
		if (posix_memalign((void **)&r->buf, 4096, r->length))
			err = -ENOMEM;
		break;
	case NBD_CMD_WRITE:
		op = TDO_RMOP_WRITE;
		break;
	case NBD_CMD_FLUSH:
		op = TDO_RMOP_FLUSH;
		break;
	case NBD_CMD_TRIM:
		op = TDO_RMOP_TRIM;
		break;
	default:
		/* WRITE_ZEROES: an index update, always fast, so FAST_ZERO is met */
		op = TDO_RMOP_ZERO;
		flags = r->flags & NBD_CMD_FLAG_NO_HOLE ? TDO_ZERO_NO_HOLE : 0;
		break;
	}
	/* replicated, or forwarded to the primary: the volume tier decides */
	if (!err)
		err = tdo_vhandle_io(c->vh, op, flags, r->offset, r->length, r->buf, rw_done, r);
	if (err)
		rw_done(r, err);
}

static struct txreq *new_req(struct nbd_conn *c);

/* The rejected write's payload is gone: answer it. 0, or -1 when closed. */
static int answer_drained(struct nbd_conn *c)
{
	struct txreq *r = new_req(c);

	c->state = CS_REQ_HEADER;
	if (!r) {
		conn_close(c, "out of memory");
		return -1;
	}
	reply_plain(r, c->drain_err);
	finish(r, c->drain_err, 0);
	return 0;
}

static struct txreq *new_req(struct nbd_conn *c)
{
	struct txreq *r = calloc(1, sizeof *r);

	if (!r)
		return NULL;
	r->c = c;
	r->type = c->req.type;
	r->flags = c->req.flags;
	r->cookie = c->req.cookie;
	r->offset = c->req.offset;
	r->length = c->req.length;
	r->t0 = tdo_now_usec();
	r->op = met_op_of(r->type);
	c->inflight++;
	c->requests++;
	return r;
}

int tx_payload_done(struct nbd_conn *c)
{
	struct txreq *r;

	c->state = CS_REQ_HEADER;
	r = new_req(c);
	if (!r) {
		conn_close(c, "out of memory");
		return -1;
	}
	r->buf = c->payload;
	c->payload = NULL;
	submit(r);
	return c->closing ? -1 : 0;
}

ssize_t tx_consume(struct nbd_conn *c, const uint8_t *p, size_t n)
{
	switch (c->state) {
	case CS_REQ_HEADER: {
		struct nbd_request q;
		struct txreq *r;
		uint32_t err;
		bool close;

		if (n < sizeof q)
			return 0;
		memcpy(&q, p, sizeof q);
		if (be32toh(q.magic) != NBD_REQUEST_MAGIC) {
			c->d->met.protocol_errors++;
			conn_close(c, "bad request magic");
			return -1;
		}
		c->req.flags = be16toh(q.flags);
		c->req.type = be16toh(q.type);
		c->req.cookie = q.cookie; /* opaque: echoed in wire order */
		c->req.offset = be64toh(q.offset);
		c->req.length = be32toh(q.length);
		if (c->req.type == NBD_CMD_DISC) {
			c->disc = true;
			tdo_log(TDO_LOG_INFO, "nbd", "connection %llu volume %s: NBD_CMD_DISC after %llu requests",
			        (unsigned long long)c->id, c->name, (unsigned long long)c->requests);
			conn_request_done(c);
			return sizeof q;
		}
		tdo_log(TDO_LOG_DEBUG, "nbd", "connection %llu: cmd %u flags 0x%x offset %llu length %u",
		        (unsigned long long)c->id, c->req.type, c->req.flags,
		        (unsigned long long)c->req.offset, c->req.length);
		err = validate(c, &(struct txreq){ .type = c->req.type, .flags = c->req.flags,
		                                   .offset = c->req.offset, .length = c->req.length }, &close);
		if (close) {
			c->d->met.protocol_errors++;
			conn_close(c, "impossible write length");
			return -1;
		}
		if (c->req.type == NBD_CMD_WRITE) {
			if (err) {
				/* answer after the payload has been read and dropped */
				c->drain_left = c->req.length;
				c->drain_err = err;
				c->state = CS_REQ_DRAIN;
				if (!c->drain_left && answer_drained(c))
					return -1;
				return sizeof q;
			}
			c->payload = malloc(c->req.length ? c->req.length : 1);
			if (!c->payload) {
				conn_close(c, "out of memory");
				return -1;
			}
			c->payload_got = 0;
			c->state = CS_REQ_PAYLOAD;
			return sizeof q;
		}
		r = new_req(c);
		if (!r) {
			conn_close(c, "out of memory");
			return -1;
		}
		if (err) {
			tdo_log(TDO_LOG_DEBUG, "nbd", "connection %llu: request rejected with NBD error %u",
			        (unsigned long long)c->id, err);
			reply_plain(r, err);
			finish(r, err, 0);
		} else {
			submit(r);
		}
		return c->closing ? -1 : (ssize_t)sizeof q;
	}
	case CS_REQ_PAYLOAD: {
		size_t take = c->req.length - c->payload_got;

		if (take > n)
			take = n;
		memcpy(c->payload + c->payload_got, p, take);
		c->payload_got += (uint32_t)take;
		if (c->payload_got == c->req.length && tx_payload_done(c))
			return -1;
		return (ssize_t)take;
	}
	case CS_REQ_DRAIN: {
		size_t take = c->drain_left < n ? (size_t)c->drain_left : n;
		c->drain_left -= take;
		if (c->drain_left == 0 && answer_drained(c))
			return -1;
		return (ssize_t)take;
	}
	default:
		return 0;
	}
}
