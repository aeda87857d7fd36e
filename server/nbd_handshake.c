/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the fixed newstyle handshake. The server greets with
 * FIXED_NEWSTYLE|NO_ZEROES; each option is read whole (bounded by
 * NBD_MAX_OPTION, so its length is checked before anything is allocated)
 * and answered; EXPORT_NAME and GO end the handshake. What the kernel's
 * nbd-client sends is one GO with no information requests (or, with -g,
 * EXPORT_NAME); both must work. Unknown options get NBD_REP_ERR_UNSUP.
 * Choosing an export opens a handle on the volume through the volume
 * tier (any node serves any volume of its cluster); INFO only looks, and
 * lets the handle go.
 *
 * Must never: send a structured reply before STRUCTURED_REPLY, trust a
 * length inside option data without checking it against the option's
 * length, or read past what was received.
 */
#include <endian.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd_internal.h"
#include "testudo/vtier.h"

struct opt_out {
	struct nbd_opt_reply h;
	uint8_t data[];
};

static void opt_reply(struct nbd_conn *c, uint32_t type, const void *data, uint32_t len)
{
	struct opt_out *o = malloc(sizeof *o + len);
	uv_buf_t b;

	if (!o) {
		nbd_conn_close(c, "out of memory");
		return;
	}
	o->h = (struct nbd_opt_reply){ .or_magic = htobe64(NBD_REP_MAGIC), .or_option = htobe32(c->opt),
	                               .or_type = htobe32(type), .or_length = htobe32(len) };
	if (len)
		memcpy(o->data, data, len);
	b = uv_buf_init((char *)o, (unsigned)(sizeof o->h + len));
	nbd_conn_send(c, &b, 1, o, NULL);
}

static void opt_error(struct nbd_conn *c, uint32_t type, const char *msg)
{
	tdo_log(TDO_LOG_DEBUG, "nbd", "connection %llu: option %u refused (0x%x): %s",
	        (unsigned long long)c->id, c->opt, type, msg);
	opt_reply(c, type, msg, (uint32_t)strlen(msg));
}

void hs_start(struct nbd_conn *c)
{
	struct nbd_greeting *g = malloc(sizeof *g);
	uv_buf_t b;

	if (!g) {
		nbd_conn_close(c, "out of memory");
		return;
	}
	*g = (struct nbd_greeting){ .gr_magic = htobe64(NBD_MAGIC), .gr_opt_magic = htobe64(NBD_IHAVEOPT),
	                            .gr_flags = htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES) };
	b = uv_buf_init((char *)g, sizeof *g);
	c->state = CS_CLIENT_FLAGS;
	nbd_conn_send(c, &b, 1, g, NULL);
}

/* Forget the export chosen (INFO only looked, or it was refused). */
static void drop_export(struct nbd_conn *c)
{
	if (c->vh)
		tdo_vhandle_close(c->vh);
	c->vh = NULL;
	met_vol_put(&c->d->met, c->met);
	c->met = NULL;
	c->name[0] = 0;
}

/* Choose the export; 0 or an NBD_REP_ERR_*. Any node serves any volume
 * of its cluster: the volume tier forwards to the primary. */
static uint32_t pick_export(struct nbd_conn *c, const char *name)
{
	drop_export(c);
	if (tdo_vhandle_open(c->d->vtier, name, &c->vh, &c->terms.size)) {
		c->vh = NULL;
		return NBD_REP_ERR_UNKNOWN;
	}
	snprintf(c->name, sizeof c->name, "%s", name);
	c->terms.tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
	            NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_DF |
	            NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE | NBD_FLAG_SEND_FAST_ZERO;
	c->met = met_vol_get(&c->d->met, c->name);
	return 0;
}

static void enter_transmission(struct nbd_conn *c)
{
	c->state = CS_REQ_HEADER;
	uv_timer_stop(&c->hs_timer); /* NBD_HANDSHAKE_MS applies to the haggling only */
	tdo_log(TDO_LOG_DEBUG, "nbd", "connection %llu: transmission flags 0x%x", (unsigned long long)c->id,
	        c->terms.tflags);
	tdo_log(TDO_LOG_INFO, "nbd", "connection %llu from %s: volume %s, %llu bytes, %s replies%s",
	        (unsigned long long)c->id, c->peer, c->name, (unsigned long long)c->terms.size,
	        c->terms.structured ? "structured" : "simple", c->terms.meta_base ? ", base:allocation" : "");
}

static void info_export(struct nbd_conn *c)
{
	struct nbd_info_export i = { .ex_type = htobe16(NBD_INFO_EXPORT), .ex_size = htobe64(c->terms.size),
	                             .ex_flags = htobe16(c->terms.tflags) };

	opt_reply(c, NBD_REP_INFO, &i, sizeof i);
}

/* NBD_INFO_NAME or NBD_INFO_DESCRIPTION: the type, then TEXT without its NUL. */
static void info_text(struct nbd_conn *c, uint16_t type, const char *text)
{
	struct nbd_info_text h = { .it_type = htobe16(type) };
	uint8_t buf[sizeof h + 128];
	size_t n = strnlen(text, sizeof buf - sizeof h);

	memcpy(buf, &h, sizeof h);
	memcpy(buf + sizeof h, text, n);
	opt_reply(c, NBD_REP_INFO, buf, (uint32_t)(sizeof h + n));
}

static void info_block_size(struct nbd_conn *c)
{
	struct nbd_info_block_size bs = { .ib_type = htobe16(NBD_INFO_BLOCK_SIZE), .ib_min = htobe32(NBD_MIN_BLOCK),
	                                  .ib_pref = htobe32(NBD_PREF_BLOCK), .ib_max = htobe32(NBD_MAX_PAYLOAD) };

	opt_reply(c, NBD_REP_INFO, &bs, sizeof bs);
}

/*
 * The export name that opens the data P[0, LEN) of INFO, GO and the META
 * context options: a 32-bit length, the name, then at least TAIL bytes
 * more. Copied into NAME, NUL-terminated (a NUL inside it is the caller's
 * to refuse); its length, or -1 after an NBD_REP_ERR_INVALID reply.
 */
static int opt_export_name(struct nbd_conn *c, const uint8_t *p, uint32_t len, uint32_t tail,
                           char name[NBD_MAX_STRING + 1])
{
	uint32_t n;

	if (len < 4 + tail) {
		opt_error(c, NBD_REP_ERR_INVALID, "option too short");
		return -1;
	}
	memcpy(&n, p, 4);
	n = be32toh(n);
	if (n > NBD_MAX_STRING || (uint64_t)n + 4 + tail > len) {
		opt_error(c, NBD_REP_ERR_INVALID, "export name length does not fit the option");
		return -1;
	}
	memcpy(name, p + 4, n);
	name[n] = 0;
	return (int)n;
}

static void do_info_go(struct nbd_conn *c, const uint8_t *p, uint32_t len)
{
	int nl;
	uint32_t namelen;
	uint16_t nreq;
	char name[NBD_MAX_STRING + 1];
	uint32_t err;

	if ((nl = opt_export_name(c, p, len, 2, name)) < 0)
		return;
	namelen = (uint32_t)nl;
	memcpy(&nreq, p + 4 + namelen, 2);
	nreq = be16toh(nreq);
	if ((uint64_t)namelen + 6 + 2ull * nreq != len)
		return opt_error(c, NBD_REP_ERR_INVALID, "information request count does not fit the option");
	if (memchr(name, 0, namelen))
		return opt_error(c, NBD_REP_ERR_INVALID, "export name contains NUL");
	tdo_log(TDO_LOG_DEBUG, "nbd", "connection %llu: option %u for '%.64s' with %u information requests",
	        (unsigned long long)c->id, c->opt, name, nreq);
	err = pick_export(c, name);
	if (err) {
		char msg[128];
		snprintf(msg, sizeof msg, "no volume named '%.64s'", name);
		return opt_error(c, err, msg);
	}
	for (uint16_t i = 0; i < nreq; i++) {
		uint16_t t;
		memcpy(&t, p + 6 + namelen + 2 * i, 2);
		t = be16toh(t);
		if (t == NBD_INFO_NAME) {
			info_text(c, NBD_INFO_NAME, c->name);
		} else if (t == NBD_INFO_DESCRIPTION) {
			char desc[128];
			snprintf(desc, sizeof desc, "Testudo volume %s", c->name);
			info_text(c, NBD_INFO_DESCRIPTION, desc);
		} else if (t == NBD_INFO_BLOCK_SIZE) {
			info_block_size(c);
		}
		/* unknown information requests are ignored, as the protocol asks */
	}
	info_export(c);
	opt_reply(c, NBD_REP_ACK, NULL, 0);
	if (c->opt == NBD_OPT_GO)
		enter_transmission(c);
	else
		drop_export(c); /* INFO only looked */
}

static void do_export_name(struct nbd_conn *c, const uint8_t *p, uint32_t len)
{
	char name[NBD_MAX_STRING + 1];
	struct nbd_export_name_reply *er;
	uv_buf_t b;

	if (len > NBD_MAX_STRING) {
		nbd_conn_close(c, "NBD_OPT_EXPORT_NAME: name too long");
		return;
	}
	memcpy(name, p, len);
	name[len] = 0;
	if (memchr(name, 0, len) || pick_export(c, name)) {
		/* this option has no error reply: the protocol says hang up */
		tdo_log(TDO_LOG_INFO, "nbd", "connection %llu from %s: NBD_OPT_EXPORT_NAME for unknown volume '%.64s'",
		        (unsigned long long)c->id, c->peer, name);
		drop_export(c);
		nbd_conn_close(c, "unknown export");
		return;
	}
	er = calloc(1, sizeof *er); /* the 124 reserved bytes are zero */
	if (!er) {
		nbd_conn_close(c, "out of memory");
		return;
	}
	er->en_size = htobe64(c->terms.size);
	er->en_flags = htobe16(c->terms.tflags);
	b = uv_buf_init((char *)er, c->no_zeroes ? offsetof(struct nbd_export_name_reply, en_zeroes) : sizeof *er);
	nbd_conn_send(c, &b, 1, er, NULL);
	enter_transmission(c);
}

static void do_list(struct nbd_conn *c, uint32_t len)
{
	struct tdo_vinfo *vi;
	int n;

	if (len)
		return opt_error(c, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
	vi = calloc(TDO_MAX_VOLS, sizeof *vi);
	if (!vi)
		return opt_error(c, NBD_REP_ERR_PLATFORM, "out of memory");
	n = tdo_vtier_list(c->d->vtier, vi, TDO_MAX_VOLS);
	for (int i = 0; i < n && i < (int)TDO_MAX_VOLS; i++) {
		uint32_t nl = (uint32_t)strlen(vi[i].name);
		struct nbd_rep_server rs = { .rs_name_len = htobe32(nl) };
		uint8_t buf[sizeof rs + TDO_NAME_MAX + 128];
		int dl;
		memcpy(buf, &rs, sizeof rs);
		memcpy(buf + sizeof rs, vi[i].name, nl);
		dl = snprintf((char *)buf + sizeof rs + nl, 128, "Testudo volume %s", vi[i].name);
		opt_reply(c, NBD_REP_SERVER, buf, (uint32_t)sizeof rs + nl + (uint32_t)dl);
	}
	free(vi);
	opt_reply(c, NBD_REP_ACK, NULL, 0);
}

static void do_meta(struct nbd_conn *c, const uint8_t *p, uint32_t len)
{
	bool set = c->opt == NBD_OPT_SET_META_CONTEXT;
	int nl;
	uint32_t namelen, nq, off;
	char name[NBD_MAX_STRING + 1];
	struct tdo_vinfo vi;
	bool base = false;

	if (set && !c->terms.structured)
		return opt_error(c, NBD_REP_ERR_INVALID, "SET_META_CONTEXT needs structured replies first");
	if ((nl = opt_export_name(c, p, len, 4, name)) < 0)
		return;
	namelen = (uint32_t)nl;
	memcpy(&nq, p + 4 + namelen, 4);
	nq = be32toh(nq);
	off = 8 + namelen;
	if (nq > len)
		return opt_error(c, NBD_REP_ERR_INVALID, "query count does not fit the option");
	if (memchr(name, 0, namelen) || tdo_vtier_info(c->d->vtier, name, &vi))
		return opt_error(c, NBD_REP_ERR_UNKNOWN, "no such volume");
	/* check every query's framing before answering any */
	for (uint32_t i = 0, o = off; i < nq; i++) {
		uint32_t ql;
		if (o + 4 > len)
			return opt_error(c, NBD_REP_ERR_INVALID, "query runs past the option");
		memcpy(&ql, p + o, 4);
		ql = be32toh(ql);
		if (ql > NBD_MAX_STRING || (uint64_t)o + 4 + ql > len)
			return opt_error(c, NBD_REP_ERR_INVALID, "query runs past the option");
		o += 4 + ql;
		if (i + 1 == nq && o != len)
			return opt_error(c, NBD_REP_ERR_INVALID, "trailing bytes after the queries");
	}
	if (nq == 0) {
		if (off != len)
			return opt_error(c, NBD_REP_ERR_INVALID, "trailing bytes after the queries");
		base = !set; /* LIST with no query lists all; SET with none selects none */
	}
	for (uint32_t i = 0; i < nq; i++) {
		uint32_t ql;
		memcpy(&ql, p + off, 4);
		ql = be32toh(ql);
		if ((ql == strlen(NBD_META_BASE_ALLOCATION) &&
		     memcmp(p + off + 4, NBD_META_BASE_ALLOCATION, ql) == 0) ||
		    (!set && ql == 5 && memcmp(p + off + 4, "base:", 5) == 0))
			base = true;
		off += 4 + ql;
	}
	if (base) {
		struct nbd_rep_meta_context mc = { .mc_id = htobe32(NBD_META_ID_BASE_ALLOCATION) };
		uint8_t buf[sizeof mc + sizeof NBD_META_BASE_ALLOCATION];
		memcpy(buf, &mc, sizeof mc);
		memcpy(buf + sizeof mc, NBD_META_BASE_ALLOCATION, strlen(NBD_META_BASE_ALLOCATION));
		opt_reply(c, NBD_REP_META_CONTEXT, buf, (uint32_t)(sizeof mc + strlen(NBD_META_BASE_ALLOCATION)));
	}
	if (set)
		c->terms.meta_base = base;
	opt_reply(c, NBD_REP_ACK, NULL, 0);
}

static void handle_option(struct nbd_conn *c, const uint8_t *p, uint32_t len)
{
	switch (c->opt) {
	case NBD_OPT_EXPORT_NAME:
		return do_export_name(c, p, len);
	case NBD_OPT_ABORT:
		opt_reply(c, NBD_REP_ACK, NULL, 0);
		nbd_conn_close(c, "client aborted the handshake");
		return;
	case NBD_OPT_LIST:
		return do_list(c, len);
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return do_info_go(c, p, len);
	case NBD_OPT_STRUCTURED_REPLY:
		if (len)
			return opt_error(c, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
		c->terms.structured = true;
		return opt_reply(c, NBD_REP_ACK, NULL, 0);
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return do_meta(c, p, len);
	case NBD_OPT_STARTTLS:
		return opt_error(c, NBD_REP_ERR_UNSUP, "TLS is not supported by this server");
	default:
		return opt_error(c, NBD_REP_ERR_UNSUP, "unknown option");
	}
}

ssize_t hs_consume(struct nbd_conn *c, const uint8_t *p, size_t n)
{
	switch (c->state) {
	case CS_CLIENT_FLAGS: {
		uint32_t f;
		if (n < 4)
			return 0;
		memcpy(&f, p, 4);
		f = be32toh(f);
		if (!(f & NBD_FLAG_C_FIXED_NEWSTYLE) || (f & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))) {
			c->d->met.handshakes_failed++;
			nbd_conn_close(c, "client flags not fixed newstyle");
			return -1;
		}
		c->no_zeroes = f & NBD_FLAG_C_NO_ZEROES;
		tdo_log(TDO_LOG_DEBUG, "nbd", "connection %llu: client flags 0x%x", (unsigned long long)c->id, f);
		c->state = CS_OPT_HEADER;
		return 4;
	}
	case CS_OPT_HEADER: {
		struct nbd_opt_hdr h;
		uint32_t len;
		if (n < sizeof h)
			return 0;
		memcpy(&h, p, sizeof h);
		if (be64toh(h.oh_magic) != NBD_IHAVEOPT) {
			c->d->met.handshakes_failed++;
			nbd_conn_close(c, "bad option magic");
			return -1;
		}
		len = be32toh(h.oh_length);
		if (len > NBD_MAX_OPTION) {
			c->d->met.handshakes_failed++;
			nbd_conn_close(c, "option length too large");
			return -1;
		}
		if (n < sizeof h + len)
			return 0; /* wait for the whole option (bounded above) */
		if (++c->nopts > NBD_MAX_OPTIONS) {
			c->d->met.handshakes_failed++;
			nbd_conn_close(c, "too many options");
			return -1;
		}
		c->opt = be32toh(h.oh_option);
		tdo_log(TDO_LOG_DEBUG, "nbd", "connection %llu: option %u, %u bytes", (unsigned long long)c->id,
		        c->opt, len);
		handle_option(c, p + sizeof h, len);
		return c->closing ? -1 : (ssize_t)(sizeof h + len);
	}
	default:
		return 0;
	}
}
