/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the transmission phase. Each 28-byte request goes through one
 * validator (the magic here, then nbd_validate.c: command, flags, length,
 * range, alignment, read-only) before the volume tier sees it; a rejected write still has its payload
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
	uint32_t held;              /* bytes of c->held this request gives back */
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

/* What goes before a reply's data (if any), in its own buffer. */
union reply_out {
	struct nbd_simple_reply s;
	struct nbd_structured_reply none;   /* NBD_REPLY_TYPE_NONE */
	struct nbd_chunk_offset_data data;
	struct nbd_chunk_error err;
};

/* A structured reply chunk's header, the last of its request's. */
static struct nbd_structured_reply chunk_hdr(const struct txreq *r, uint16_t type, uint32_t length)
{
	return (struct nbd_structured_reply){ .ch_magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC),
	                                      .ch_flags = htobe16(NBD_REPLY_FLAG_DONE), .ch_type = htobe16(type),
	                                      .ch_cookie = r->cookie, .ch_length = htobe32(length) };
}

static struct nbd_simple_reply simple_reply(const struct txreq *r, uint32_t nerr)
{
	return (struct nbd_simple_reply){ .sr_magic = htobe32(NBD_SIMPLE_REPLY_MAGIC), .sr_error = htobe32(nerr),
	                                  .sr_cookie = r->cookie };  /* echoed as received */
}

/* Requests that fail are logged one line each, up to this many a second
 * per connection; the rest are counted, and the count is logged when the
 * second is over (or the connection closes). A device that fails every
 * write must not turn the log into a second copy of the traffic. */
#define NBD_ERR_LOG_MAX 10

void tx_log_quiet_errors(struct nbd_conn *c)
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
			tx_log_quiet_errors(c);
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
	nbd_conn_release(c, r->held);
	free(r);
	nbd_conn_request_done(c);
}

/* A reply without data: simple, or one structured NONE/ERROR chunk. */
static void reply_plain(struct txreq *r, uint32_t nerr)
{
	struct nbd_conn *c = r->c;
	union reply_out *o = malloc(sizeof *o);
	uv_buf_t b;

	if (!o) {
		nbd_conn_close(c, "out of memory");
		return;
	}
	if (!c->terms.structured) {
		o->s = simple_reply(r, nerr);
		b = uv_buf_init((char *)&o->s, sizeof o->s);
	} else if (!nerr) {
		o->none = chunk_hdr(r, NBD_REPLY_TYPE_NONE, 0);
		b = uv_buf_init((char *)&o->none, sizeof o->none);
	} else {
		/* no message: the payload is the error and a zero message length */
		o->err = (struct nbd_chunk_error){
			.er_hdr = chunk_hdr(r, NBD_REPLY_TYPE_ERROR, sizeof o->err - sizeof o->err.er_hdr),
			.er_error = htobe32(nerr), .er_msg_len = 0 };
		b = uv_buf_init((char *)&o->err, sizeof o->err);
	}
	nbd_conn_send(c, &b, 1, o, NULL);
}

static void reply_read(struct txreq *r)
{
	struct nbd_conn *c = r->c;
	union reply_out *o = malloc(sizeof *o);
	uv_buf_t b[2];

	if (!o) {
		free(r->buf);
		r->buf = NULL;
		nbd_conn_close(c, "out of memory");
		return;
	}
	if (!c->terms.structured) {
		o->s = simple_reply(r, 0);
		b[0] = uv_buf_init((char *)&o->s, sizeof o->s);
	} else {
		/* one chunk: the offset, then the data (at most NBD_MAX_PAYLOAD) */
		o->data = (struct nbd_chunk_offset_data){
			.od_hdr = chunk_hdr(r, NBD_REPLY_TYPE_OFFSET_DATA,
			                    (uint32_t)sizeof o->data.od_offset + r->length),
			.od_offset = htobe64(r->offset) };
		b[0] = uv_buf_init((char *)&o->data, sizeof o->data);
	}
	b[1] = uv_buf_init((char *)r->buf, r->length);
	/* both freed once written; the read's bytes stay held until then */
	nbd_conn_send_held(c, b, 2, o, r->buf, r->held);
	r->buf = NULL;
	r->held = 0;
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
	struct nbd_chunk_block_status *out; /* room for cap descriptors */
	uint32_t n, cap;
	bool one;
};

static int bs_extent(void *arg, uint64_t off, uint64_t len, unsigned state)
{
	struct bs_ctx *x = arg;

	(void)off;
	if (x->n == x->cap)
		return 1;
	while (len) {
		uint32_t l = len > 0x80000000u ? 0x80000000u : (uint32_t)len;
		x->out->bs_desc[x->n++] = (struct nbd_block_descriptor){
			.bd_length = htobe32(l),
			.bd_status = htobe32((state & TDO_MAP_HOLE ? NBD_STATE_HOLE : 0) |
			                     (state & TDO_MAP_ZERO ? NBD_STATE_ZERO : 0)) };
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
	uint64_t len = r->length;
	size_t payload;
	uv_buf_t b;

	if (r->offset + len > c->terms.size)
		len = c->terms.size - r->offset;
	x.cap = 1024;
	x.one = r->flags & NBD_CMD_FLAG_REQ_ONE;
	/* one buffer: the chunk's header, context id and descriptors */
	x.out = malloc(sizeof *x.out + (size_t)x.cap * sizeof x.out->bs_desc[0]);
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
	payload = sizeof x.out->bs_context + x.n * sizeof x.out->bs_desc[0];
	x.out->bs_hdr = chunk_hdr(r, NBD_REPLY_TYPE_BLOCK_STATUS, (uint32_t)payload);
	x.out->bs_context = htobe32(NBD_META_ID_BASE_ALLOCATION);
	b = uv_buf_init((char *)x.out, (unsigned)(sizeof x.out->bs_hdr + payload));
	nbd_conn_send(c, &b, 1, x.out, NULL);
	finish(r, 0, 0);
}

/* ---- dispatch (after nbd_validate.c) ------------------------------------- */

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
		if (posix_memalign((void **)&r->buf, 4096, r->length)) {
			err = -ENOMEM;
			break;
		}
		r->held = r->length;
		c->held += r->length;
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
		nbd_conn_close(c, "out of memory");
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
	r->type = c->req.rq_type;
	r->flags = c->req.rq_flags;
	r->cookie = c->req.rq_cookie;
	r->offset = c->req.rq_offset;
	r->length = c->req.rq_length;
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
		nbd_conn_close(c, "out of memory");
		return -1;
	}
	r->buf = c->payload;
	r->held = c->req.rq_length; /* counted when the payload was allocated */
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
		if (be32toh(q.rq_magic) != NBD_REQUEST_MAGIC) {
			c->d->met.protocol_errors++;
			nbd_conn_close(c, "bad request magic");
			return -1;
		}
		c->req.rq_flags = be16toh(q.rq_flags);
		c->req.rq_type = be16toh(q.rq_type);
		c->req.rq_cookie = q.rq_cookie; /* opaque: echoed in wire order */
		c->req.rq_offset = be64toh(q.rq_offset);
		c->req.rq_length = be32toh(q.rq_length);
		if (c->req.rq_type == NBD_CMD_DISC) {
			c->disc = true;
			tdo_log(TDO_LOG_INFO, "nbd", "connection %llu volume %s: NBD_CMD_DISC after %llu requests",
			        (unsigned long long)c->id, c->name, (unsigned long long)c->requests);
			nbd_conn_request_done(c);
			return sizeof q;
		}
		tdo_log(TDO_LOG_DEBUG, "nbd", "connection %llu: cmd %u flags 0x%x offset %llu length %u",
		        (unsigned long long)c->id, c->req.rq_type, c->req.rq_flags,
		        (unsigned long long)c->req.rq_offset, c->req.rq_length);
		err = nbd_validate(&c->terms, &c->req, &close);
		if (close) {
			c->d->met.protocol_errors++;
			nbd_conn_close(c, "impossible write length");
			return -1;
		}
		/* the budget: wait (reading nothing more) while other requests hold it */
		if (!err && (c->req.rq_type == NBD_CMD_READ || c->req.rq_type == NBD_CMD_WRITE) && c->held &&
		    c->held + c->req.rq_length > NBD_MAX_HELD) {
			c->held_wait = true;
			return 0;
		}
		if (c->req.rq_type == NBD_CMD_WRITE) {
			if (err) {
				/* answer after the payload has been read and dropped */
				c->drain_left = c->req.rq_length;
				c->drain_err = err;
				c->state = CS_REQ_DRAIN;
				if (!c->drain_left && answer_drained(c))
					return -1;
				return sizeof q;
			}
			c->payload = malloc(c->req.rq_length ? c->req.rq_length : 1);
			if (!c->payload) {
				nbd_conn_close(c, "out of memory");
				return -1;
			}
			c->held += c->req.rq_length;
			c->payload_got = 0;
			c->state = CS_REQ_PAYLOAD;
			return sizeof q;
		}
		r = new_req(c);
		if (!r) {
			nbd_conn_close(c, "out of memory");
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
		size_t take = c->req.rq_length - c->payload_got;

		if (take > n)
			take = n;
		memcpy(c->payload + c->payload_got, p, take);
		c->payload_got += (uint32_t)take;
		if (c->payload_got == c->req.rq_length && tx_payload_done(c))
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
