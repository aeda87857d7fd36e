/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the volume tier's messages from peers, checked and handed out.
 * The cluster (peer.c) has checked framing and checksum; here one table
 * says, for each message type, how long its payload may be and which
 * handler takes it, and one function applies it: it checks the length
 * rule, copies the fixed header out of the payload (handlers read an
 * aligned struct, never the receive buffer's bytes in place), runs the
 * type's extra header check if it has one, and calls the handler with
 * the header and whatever follows it.
 *
 * Length rules: EXACT (the header alone), AT_LEAST (the header and data
 * whose length the handler checks against the header: a write's bytes, a
 * read's reply, a checksum list, a resync map's runs) and ITEMS (the
 * header and 0..max whole items).
 *
 * Must never: hand a handler a message shorter than its header, or of a
 * type or operation the handler does not take; keep the connection of a
 * peer that sent one (it is dropped, saying so); act on anything once
 * the node is stopping.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* The fixed part of every volume message. */
union vmsg_hdr {
	struct tdo_rm_vconf vconf;
	struct tdo_rm_vconf_ack vconf_ack;
	struct tdo_rm_io io;
	struct tdo_rm_ack ack;
	struct tdo_rm_rs rs;
	struct tdo_rm_sum sum;
	struct tdo_rm_promote pm;
};

/* One checked message: its header copied out, TAIL the TLEN bytes after it. */
struct vmsg {
	struct tdo_vtier *vt;
	int peer;
	uint16_t type;
	const union vmsg_hdr *h;
	const void *tail;
	uint32_t tlen;
};

enum vmsg_len { EXACT = 1, AT_LEAST, ITEMS };

struct vmsg_rule {
	enum vmsg_len len;
	uint32_t hdr;               /* bytes of the fixed header */
	uint32_t item, max_items;   /* ITEMS: bytes of one item, and how many may follow */
	bool (*ok)(uint16_t type, const union vmsg_hdr *h); /* more checks of the header, or NULL */
	void (*fn)(const struct vmsg *m);
};

/* WRITE, RS_DATA, FWD: an operation that type carries, a range that does
 * not wrap, and no more data than a message can carry where data travels:
 * a write's with it, a forwarded read's in the reply. A trim, write-zeroes
 * or hole carries none; NBD lets one span the whole volume, so its length
 * is bounded by the volume's size, which the handler checks. */
static bool io_ok(uint16_t type, const union vmsg_hdr *h)
{
	const struct tdo_rm_io *io = &h->io;
	bool data = io->io_op == TDO_RMOP_WRITE || io->io_op == TDO_RMOP_READ;
	return io->io_op >= TDO_RMOP_READ && io->io_op <= TDO_RMOP_HOLE && (!data || io->io_len <= TDO_RM_MAX_PAYLOAD) &&
	       io->io_off + io->io_len >= io->io_off &&
	       (type == TDO_RM_FWD || (io->io_op != TDO_RMOP_READ && io->io_op != TDO_RMOP_FLUSH)) &&
	       (type == TDO_RM_RS_DATA || io->io_op != TDO_RMOP_HOLE);
}

static void h_vconf(const struct vmsg *m) { cfgp_on_vconf(m->vt, m->peer, &m->h->vconf); }
static void h_vconf_ack(const struct vmsg *m) { cfgp_on_vconf_ack(m->vt, m->peer, &m->h->vconf_ack, m->tail, m->tlen); }
static void h_write(const struct vmsg *m) { wr_on_write(m->vt, m->peer, &m->h->io, m->tail, m->tlen, false); }
static void h_rs_data(const struct vmsg *m) { wr_on_write(m->vt, m->peer, &m->h->io, m->tail, m->tlen, true); }
static void h_wack(const struct vmsg *m) { wr_on_wack(m->vt, m->peer, &m->h->ack); }
static void h_fwd(const struct vmsg *m) { fwd_on_req(m->vt, m->peer, &m->h->io, m->tail, m->tlen); }
static void h_fwd_rep(const struct vmsg *m) { fwd_on_rep(m->vt, m->peer, &m->h->ack, m->tail, m->tlen); }
static void h_rs_replica(const struct vmsg *m) { rsr_on_msg(m->vt, m->peer, m->type, &m->h->rs); }
static void h_rs_state(const struct vmsg *m) { rs_on_state(m->vt, m->peer, &m->h->rs); }
static void h_rs_map(const struct vmsg *m) { rs_on_map(m->vt, m->peer, &m->h->rs, m->tail, m->tlen); }
static void h_rs_ack(const struct vmsg *m) { rs_on_ack(m->vt, m->peer, &m->h->ack); }
static void h_rs_end(const struct vmsg *m) { rs_on_end(m->vt, m->peer, &m->h->rs); }
static void h_sum(const struct vmsg *m) { ver_on_sum(m->vt, m->peer, &m->h->sum); }
static void h_sum_rep(const struct vmsg *m) { ver_on_sum_rep(m->vt, m->peer, &m->h->sum, m->tail, m->tlen); }
static void h_promote(const struct vmsg *m) { pm_on_promote(m->vt, m->peer, &m->h->pm); }
static void h_promote_rep(const struct vmsg *m) { pm_on_rep(m->vt, m->peer, &m->h->pm); }

#define RULE(t) [TDO_RM_##t - TDO_RM_FIRST_VOLUME]
static const struct vmsg_rule rules[TDO_RM_END - TDO_RM_FIRST_VOLUME] = {
	RULE(VCONF)       = { EXACT, sizeof(struct tdo_rm_vconf), 0, 0, NULL, h_vconf },
	/* a refusal carries the refuser's configuration */
	RULE(VCONF_ACK)   = { ITEMS, sizeof(struct tdo_rm_vconf_ack), sizeof(struct tdo_rm_vconf), 1, NULL, h_vconf_ack },
	RULE(WRITE)       = { AT_LEAST, sizeof(struct tdo_rm_io), 0, 0, io_ok, h_write },
	RULE(WACK)        = { EXACT, sizeof(struct tdo_rm_ack), 0, 0, NULL, h_wack },
	RULE(FWD)         = { AT_LEAST, sizeof(struct tdo_rm_io), 0, 0, io_ok, h_fwd },
	RULE(FWD_REP)     = { AT_LEAST, sizeof(struct tdo_rm_ack), 0, 0, NULL, h_fwd_rep },
	RULE(RS_BEGIN)    = { EXACT, sizeof(struct tdo_rm_rs), 0, 0, NULL, h_rs_replica },
	RULE(RS_STATE)    = { EXACT, sizeof(struct tdo_rm_rs), 0, 0, NULL, h_rs_state },
	RULE(RS_SCAN)     = { EXACT, sizeof(struct tdo_rm_rs), 0, 0, NULL, h_rs_replica },
	/* the runs are checked against rs_nruns by the resync they are for */
	RULE(RS_MAP)      = { AT_LEAST, sizeof(struct tdo_rm_rs), 0, 0, NULL, h_rs_map },
	RULE(RS_DATA)     = { AT_LEAST, sizeof(struct tdo_rm_io), 0, 0, io_ok, h_rs_data },
	RULE(RS_ACK)      = { EXACT, sizeof(struct tdo_rm_ack), 0, 0, NULL, h_rs_ack },
	RULE(RS_DONE)     = { EXACT, sizeof(struct tdo_rm_rs), 0, 0, NULL, h_rs_replica },
	RULE(RS_END)      = { EXACT, sizeof(struct tdo_rm_rs), 0, 0, NULL, h_rs_end },
	RULE(SUM)         = { EXACT, sizeof(struct tdo_rm_sum), 0, 0, NULL, h_sum },
	RULE(SUM_REP)     = { AT_LEAST, sizeof(struct tdo_rm_sum), 0, 0, NULL, h_sum_rep },
	RULE(PROMOTE)     = { EXACT, sizeof(struct tdo_rm_promote), 0, 0, NULL, h_promote },
	RULE(PROMOTE_REP) = { EXACT, sizeof(struct tdo_rm_promote), 0, 0, NULL, h_promote_rep },
};
#undef RULE

/* Does a payload of LEN bytes pass R's length rule? */
static bool len_ok(const struct vmsg_rule *r, uint32_t len)
{
	if (len < r->hdr)
		return false;
	switch (r->len) {
	case EXACT:
		return len == r->hdr;
	case AT_LEAST:
		return true;
	case ITEMS:
		return (len - r->hdr) % r->item == 0 && (len - r->hdr) / r->item <= r->max_items;
	}
	return false;
}

void dsp_msg(void *arg, int peer, uint16_t type, const void *payload, uint32_t len)
{
	struct tdo_vtier *vt = arg;
	if (vt->stopping)
		return;
	const struct vmsg_rule *r = NULL;
	if (type >= TDO_RM_FIRST_VOLUME && type < TDO_RM_END && rules[type - TDO_RM_FIRST_VOLUME].fn)
		r = &rules[type - TDO_RM_FIRST_VOLUME];
	union vmsg_hdr h;
	if (r && len_ok(r, len)) {
		memcpy(&h, payload, r->hdr);
		if (!r->ok || r->ok(type, &h)) {
			struct vmsg m = { vt, peer, type, &h, (const char *)payload + r->hdr, len - r->hdr };
			r->fn(&m);
			return;
		}
	}
	char why[80];
	snprintf(why, sizeof(why), "malformed volume message (type %u, %u bytes)", type, len);
	tdo_cluster_drop(vt->c, peer, why);
}
