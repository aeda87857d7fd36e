/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: resync, the primary's side (the replica's is resync_replica.c;
 * the phases are documented beside enum rs_phase in internal.h).
 *
 * The primary asks the replica for its newest trusted LSN and the epoch
 * of that write, and computes the bound up to which the replica's log is
 * the primary's history: its LSN, cut at the start of the epoch after its
 * own (the configuration's history says where each epoch began; an epoch
 * older than the history keeps means a cut of 0, a full resync). It asks
 * for the replica's allocated blocks, and marks dirty: its own blocks
 * newer than the bound, the replica's blocks newer than the bound (writes
 * the primary never had: rolled back), and blocks the replica holds where
 * the primary has a hole (trims). It copies dirty blocks while new writes
 * keep marking blocks dirty (rs_mark_dirty from wr_admit), each round
 * flushed before it is read so the read sees every write that marked it;
 * then it holds new writes (the gate), lets those in flight finish,
 * copies what is left, tells the replica its LSN, and proposes it
 * in-sync; writes resume once that is in force (or the proposal failed).
 *
 * Why a bitmap and not a log of LSNs: the index knows each block's newest
 * LSN but not the history, and a block written many times is copied once.
 *
 * Must never: let a resync copy overtake a write the replica already has
 * (the replica gets no live writes until it is in-sync, and a copy reads
 * the primary's newest data after a flush); free a resync while its local
 * reads or flush are in flight (it is marked RS_ABORTED instead); propose
 * a replica in-sync before it answered RS_END with success.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define RS_CHUNK_BLOCKS 256          /* blocks per resync copy message (1 MiB) */
#define RS_WINDOW       (16u << 20)  /* resync bytes sent and not yet durable */
#define RS_ROUND_BYTES  (8u << 20)   /* dirty bytes taken per flush */

void rs_free(struct vvol *v, int rep)
{
	struct resync *rs = v->rs[rep];
	if (!rs)
		return;
	if (rs->gated) {
		rs->gated = false;
		v->gate--;
	}
	v->rs[rep] = NULL;
	free(rs->dirty);
	free(rs);
	/* writes held while the gate was shut */
	if (!v->gate && v->primary) {
		struct tdo_list l;
		tdo_list_init(&l);
		tdo_list_move(&l, &v->held);
		while (!tdo_list_empty(&l)) {
			struct vreq *r = tdo_list_item(l.next, struct vreq, link);
			tdo_list_del(&r->link);
			wr_admit(v, r);
		}
	}
}

void rs_abort(struct vvol *v, int rep, const char *why)
{
	struct resync *rs = v->rs[rep];
	if (!rs)
		return;
	tdo_log(TDO_LOG_WARN, "vtier", "%s: resync of %s stopped: %s", v->conf.vc_name, v->conf.vc_rep[rep], why);
	if (rs->busy) {
		rs->phase = RS_ABORTED; /* freed when the local work in flight returns */
		return;
	}
	rs_free(v, rep);
}

static void rs_send(struct vvol *v, struct resync *rs, uint16_t type, uint64_t lsn)
{
	struct tdo_rm_rs m = { .rs_epoch = v->conf.vc_epoch, .rs_lsn = lsn };
	snprintf(m.rs_name, sizeof(m.rs_name), "%s", v->conf.vc_name);
	if (vt_send(v->vt, rs->peer, type, &m, sizeof(m), NULL, 0))
		rs_abort(v, rs->rep, "not connected");
}

void rs_start(struct vvol *v, int rep)
{
	int peer = vt_rep_peer(v, rep);
	if (peer < 0 || !tdo_cluster_peer_up(v->vt->c, peer) || v->rs[rep])
		return;
	struct resync *rs = calloc(1, sizeof(*rs));
	if (!rs)
		return;
	rs->rep = rep;
	rs->peer = peer;
	rs->phase = RS_WAIT_STATE;
	rs->started_usec = rs->last_refill_usec = tdo_now_usec();
	v->rs[rep] = rs;
	tdo_log(TDO_LOG_INFO, "vtier", "%s: resync of %s begins", v->conf.vc_name, v->conf.vc_rep[rep]);
	rs_send(v, rs, TDO_RM_RS_BEGIN, 0);
}

/* The resync of PEER's copy of the volume named in FIELD (a message's
 * name), running here; NULL when there is none. */
static struct resync *rs_of(struct tdo_vtier *vt, int peer, const char *field, struct vvol **vp)
{
	char name[TDO_NAME_MAX + 1];
	if (!vconf_wire_name(field, name))
		return NULL;
	struct vvol *v = vt_find_vol(vt, name);
	if (!v || !v->primary)
		return NULL;
	int rep = vconf_rep_index(&v->conf, tdo_cluster_peer_id(vt->c, peer));
	if (rep < 0 || !v->rs[rep])
		return NULL;
	*vp = v;
	return v->rs[rep];
}

static void set_dirty(struct resync *rs, uint64_t b, uint64_t n)
{
	for (uint64_t i = b; i < b + n && i < rs->nblocks; i++)
		if (!(rs->dirty[i >> 3] & (1u << (i & 7)))) {
			rs->dirty[i >> 3] |= (uint8_t)(1u << (i & 7));
			rs->ndirty++;
			rs->total++;
		}
}

/* Mark the blocks of bytes [OFF, OFF+LEN) dirty. */
static void set_dirty_bytes(struct resync *rs, uint64_t off, uint64_t len)
{
	uint64_t b = off / TDO_BLOCK_SIZE;
	set_dirty(rs, b, (off + len + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE - b);
}

void rs_mark_dirty(struct vvol *v, uint64_t off, uint64_t len)
{
	for (int i = 0; i < TDO_REP_MAX; i++) {
		struct resync *rs = v->rs[i];
		if (rs && rs->dirty)
			set_dirty_bytes(rs, off, len);
	}
}

static int scan_dirty(void *arg, uint64_t block, uint64_t lsn, unsigned state)
{
	(void)lsn;
	(void)state;
	set_dirty(arg, block, 1);
	return 0;
}

static int hole_dirty(void *arg, uint64_t off, uint64_t len, unsigned state)
{
	if (state & TDO_MAP_HOLE)
		set_dirty(arg, off / TDO_BLOCK_SIZE, len / TDO_BLOCK_SIZE);
	return 0;
}

/* The replica's newest trusted LSN and its epoch: the bound. */
static void on_state(struct vvol *v, struct resync *rs, const struct tdo_rm_rs *m)
{
	if (rs->phase != RS_WAIT_STATE)
		return;
	uint64_t bound = vconf_resync_bound(&v->conf, m->rs_lsn, m->rs_log_epoch, v->next_lsn);
	if (m->rs_lsn && m->rs_log_epoch != v->conf.vc_epoch && vconf_hist_index(&v->conf, m->rs_log_epoch) < 0)
		tdo_log(TDO_LOG_WARN, "vtier", "%s: %s's newest write is of epoch %u, %s (epochs %u to %u): a full resync",
		        v->conf.vc_name, v->conf.vc_rep[rs->rep], m->rs_log_epoch,
		        m->rs_log_epoch > v->conf.vc_epoch ? "newer than ours" : "not in the history",
		        v->conf.vc_nhist ? v->conf.vc_hist[0].vh_epoch : 0, v->conf.vc_epoch);
	rs->bound = bound;
	rs->nblocks = (v->conf.vc_size + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE;
	rs->dirty = calloc(1, (size_t)(rs->nblocks + 7) / 8);
	if (!rs->dirty) {
		rs_abort(v, rs->rep, "out of memory");
		return;
	}
	/* our own writes after the bound: those in the index, and those still
	 * in flight (not in the index yet); from now on wr_admit() marks new ones */
	tdo_engine_scan(v->vt->e, (uint32_t)v->local_id, bound, scan_dirty, rs);
	for (struct tdo_list *l = v->inflight.next; l != &v->inflight; l = l->next) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		set_dirty_bytes(rs, r->off, r->len);
	}
	rs->phase = RS_WAIT_MAP;
	tdo_log(TDO_LOG_INFO, "vtier",
	        "%s: %s trusted to LSN %" PRIu64 " epoch %u; bound %" PRIu64 " (primary at %" PRIu64 ")", v->conf.vc_name,
	        v->conf.vc_rep[rs->rep], m->rs_lsn, m->rs_log_epoch, bound, v->next_lsn);
	rs_send(v, rs, TDO_RM_RS_SCAN, bound);
}

/* The replica's blocks (TAIL: m->rs_nruns struct tdo_rm_run). */
static void on_map(struct vvol *v, struct resync *rs, const struct tdo_rm_rs *m, const void *tail, uint32_t tlen)
{
	if (rs->phase != RS_WAIT_MAP)
		return;
	if (m->rs_nruns > tlen / sizeof(struct tdo_rm_run) || tlen != m->rs_nruns * sizeof(struct tdo_rm_run)) {
		tdo_cluster_drop(v->vt->c, rs->peer, "resync map of a wrong length");
		return;
	}
	const struct tdo_rm_run *runs = tail;
	for (uint64_t i = 0; i < m->rs_nruns; i++) {
		struct tdo_rm_run ru;
		memcpy(&ru, &runs[i], sizeof(ru));
		if (ru.ru_block >= rs->nblocks || ru.ru_count > rs->nblocks - ru.ru_block)
			continue;
		if (ru.ru_kind == TDO_RUN_SUSPECT)
			set_dirty(rs, ru.ru_block, ru.ru_count); /* writes we may not have: take them back */
		else
			tdo_engine_map(v->vt->e, (uint32_t)v->local_id, ru.ru_block * TDO_BLOCK_SIZE,
			               (uint64_t)ru.ru_count * TDO_BLOCK_SIZE > v->conf.vc_size - ru.ru_block * TDO_BLOCK_SIZE
			                       ? v->conf.vc_size - ru.ru_block * TDO_BLOCK_SIZE
			                       : (uint64_t)ru.ru_count * TDO_BLOCK_SIZE,
			               hole_dirty, rs);
	}
	if (m->rs_last) {
		rs->phase = RS_COPY;
		tdo_log(TDO_LOG_INFO, "vtier", "%s: resync of %s: %" PRIu64 " blocks to copy", v->conf.vc_name,
		        v->conf.vc_rep[rs->rep], rs->ndirty);
		rs_pump(v, rs);
	}
}

struct rs_read {
	struct vvol *v;
	struct resync *rs;
	uint64_t block;
	uint32_t count;
	uint64_t tag;
	void *buf;
};

struct rs_map_ctx {
	struct vvol *v;
	struct resync *rs;
	uint64_t tag;
	int pending;
};

/*
 * One of RS's local reads or flushes returned. True when the resync goes
 * on; false when it stops here: it was aborted (the last of its work to
 * return frees it) or this failed (FAILED says what, and it is aborted).
 */
static bool work_done(struct vvol *v, struct resync *rs, int status, const char *failed)
{
	v->io_active--;
	rs->busy--;
	if (rs->phase != RS_ABORTED && !status)
		return true;
	if (rs->phase != RS_ABORTED)
		rs_abort(v, rs->rep, failed);
	else if (!rs->busy)
		rs_free(v, rs->rep);
	return false;
}

static void rs_copy_read_done(void *arg, int status)
{
	struct rs_read *rr = arg;
	struct vvol *v = rr->v;
	struct resync *rs = rr->rs;
	bool sent = false;          /* else RS may be freed already: it stopped */
	if (work_done(v, rs, status, "a local read failed")) {
		struct tdo_rm_io io = { .io_epoch = v->conf.vc_epoch, .io_op = TDO_RMOP_WRITE, .io_lsn = rr->tag,
		                        .io_off = rr->block * TDO_BLOCK_SIZE, .io_len = (uint64_t)rr->count * TDO_BLOCK_SIZE };
		snprintf(io.io_name, sizeof(io.io_name), "%s", v->conf.vc_name);
		if (io.io_off + io.io_len > v->conf.vc_size)
			io.io_len = v->conf.vc_size - io.io_off;
		if (vt_send(v->vt, rs->peer, TDO_RM_RS_DATA, &io, sizeof(io), rr->buf, (uint32_t)io.io_len))
			rs_abort(v, rs->rep, "not connected");
		else {
			rs->unacked += io.io_len;
			rs->copied += rr->count;
			sent = true;
		}
	}
	free(rr->buf);
	free(rr);
	if (sent)
		rs_pump(v, rs);
}

/* One run of a copy: holes and zeroes as such, data read and sent. */
static int rs_copy_part(void *arg, uint64_t off, uint64_t len, unsigned state)
{
	struct rs_map_ctx *x = arg;
	struct vvol *v = x->v;
	struct resync *rs = x->rs;
	if (state & (TDO_MAP_HOLE | TDO_MAP_ZERO)) {
		struct tdo_rm_io io = { .io_epoch = v->conf.vc_epoch,
		                        .io_op = (state & TDO_MAP_HOLE) ? TDO_RMOP_HOLE : TDO_RMOP_ZERO,
		                        .io_flags = (state & TDO_MAP_HOLE) ? 0 : TDO_ZERO_NO_HOLE,
		                        .io_lsn = x->tag, .io_off = off, .io_len = len };
		snprintf(io.io_name, sizeof(io.io_name), "%s", v->conf.vc_name);
		if (vt_send(v->vt, rs->peer, TDO_RM_RS_DATA, &io, sizeof(io), NULL, 0))
			return -ENOTCONN;
		rs->copied += (len + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE;
		return 0;
	}
	struct rs_read *rr = calloc(1, sizeof(*rr));
	if (!rr || posix_memalign(&rr->buf, 4096, len)) {
		free(rr);
		return -ENOMEM;
	}
	rr->v = v;
	rr->rs = rs;
	rr->block = off / TDO_BLOCK_SIZE;
	rr->count = (uint32_t)((len + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE);
	rr->tag = x->tag;
	v->io_active++;
	rs->busy++;
	int rc = tdo_engine_read(v->vt->e, (uint32_t)v->local_id, off, (uint32_t)len, rr->buf, rs_copy_read_done, rr);
	if (rc) {
		v->io_active--;
		rs->busy--;
		free(rr->buf);
		free(rr);
	}
	return rc;
}

/* A round's runs, taken from the dirty map before the flush. */
struct rs_round {
	struct vvol *v;
	struct resync *rs;
	int nruns;
	uint64_t b[64];
	uint32_t n[64];
};

static void rs_round_flushed(void *arg, int status)
{
	struct rs_round *rd = arg;
	struct vvol *v = rd->v;
	struct resync *rs = rd->rs;
	if (!work_done(v, rs, status, "a local flush failed")) {
		free(rd);
		return;
	}
	struct rs_map_ctx x = { v, rs, v->next_lsn ? v->next_lsn : 1, 0 };
	for (int i = 0; i < rd->nruns; i++) {
		uint64_t off = rd->b[i] * TDO_BLOCK_SIZE, len = (uint64_t)rd->n[i] * TDO_BLOCK_SIZE;
		if (off + len > v->conf.vc_size)
			len = v->conf.vc_size - off;
		if (tdo_engine_map(v->vt->e, (uint32_t)v->local_id, off, len, rs_copy_part, &x)) {
			free(rd);
			rs_abort(v, rs->rep, "cannot copy");
			return;
		}
	}
	free(rd);
	rs_pump(v, rs);
}

static void rs_refill(struct tdo_vtier *vt, struct resync *rs)
{
	uint64_t now = tdo_now_usec();
	uint64_t rate = vt->o.resync_rate;
	rs->tokens += (now - rs->last_refill_usec) * rate / 1000000;
	rs->last_refill_usec = now;
	if (rs->tokens > RS_ROUND_BYTES * 2ull)
		rs->tokens = RS_ROUND_BYTES * 2ull;
}

/* Take up to a round of dirty runs, flush, then copy them (after the flush,
 * a read sees every write that marked them). */
static bool rs_take_round(struct vvol *v, struct resync *rs)
{
	struct rs_round *rd = calloc(1, sizeof(*rd));
	if (!rd)
		return false;
	rd->v = v;
	rd->rs = rs;
	uint64_t bytes = 0;
	uint64_t b = rs->cursor;
	for (uint64_t scanned = 0; scanned < rs->nblocks && rd->nruns < 64 && bytes < RS_ROUND_BYTES &&
	     bytes < rs->tokens; scanned++, b++) {
		if (b >= rs->nblocks)
			b = 0;
		if (!(rs->dirty[b >> 3] & (1u << (b & 7))))
			continue;
		uint64_t start = b;
		uint32_t n = 0;
		while (b < rs->nblocks && n < RS_CHUNK_BLOCKS && (rs->dirty[b >> 3] & (1u << (b & 7)))) {
			rs->dirty[b >> 3] &= (uint8_t)~(1u << (b & 7));
			rs->ndirty--;
			b++;
			n++;
		}
		scanned += n - 1;
		b--;
		rd->b[rd->nruns] = start;
		rd->n[rd->nruns++] = n;
		bytes += (uint64_t)n * TDO_BLOCK_SIZE;
	}
	rs->cursor = b;
	if (!rd->nruns) {
		free(rd);
		return false;
	}
	rs->tokens -= bytes < rs->tokens ? bytes : rs->tokens;
	v->io_active++;
	rs->busy++;
	if (tdo_engine_flush(v->vt->e, rs_round_flushed, rd)) {
		v->io_active--;
		rs->busy--;
		free(rd);
		rs_abort(v, rs->rep, "cannot flush");
	}
	return true;
}

void rs_pump(struct vvol *v, struct resync *rs)
{
	if (v->rs[rs->rep] != rs || rs->phase == RS_ABORTED || rs->busy)
		return;
	if (rs->phase == RS_COPY) {
		rs_refill(v->vt, rs);
		if (rs->ndirty && rs->unacked < RS_WINDOW && rs->tokens >= TDO_BLOCK_SIZE) {
			rs_take_round(v, rs);
			return;
		}
		if (rs->ndirty || rs->unacked)
			return; /* the tick or an acknowledgement comes back here */
		/* hold new writes, let those in flight finish, then the rest */
		rs->phase = RS_FINAL;
		if (!rs->gated) {
			rs->gated = true;
			v->gate++;
		}
	}
	if (rs->phase == RS_FINAL) {
		if (!tdo_list_empty(&v->inflight))
			return; /* local_write_done comes back */
		if (rs->ndirty) {
			rs->tokens = RS_ROUND_BYTES * 2ull; /* the last stretch is not rate-limited: writes wait on it */
			rs_take_round(v, rs);
			return;
		}
		if (rs->unacked)
			return;
		rs->phase = RS_WAIT_END;
		rs_send(v, rs, TDO_RM_RS_DONE, v->next_lsn);
	}
}

static void rs_in_sync_done(struct vvol *v, int status, const char *why, void *arg)
{
	int rep = (int)(intptr_t)arg;
	struct resync *rs = v->rs[rep];
	if (status)
		tdo_log(TDO_LOG_WARN, "vtier", "%s: %s caught up but the change failed: %s", v->conf.vc_name,
		        v->conf.vc_rep[rep], why ? why : tdo_strerror(status));
	else if (rs)
		tdo_log(TDO_LOG_INFO, "vtier", "%s: %s in sync after copying %" PRIu64 " blocks in %.1f s", v->conf.vc_name,
		        v->conf.vc_rep[rep], rs->copied, (double)(tdo_now_usec() - rs->started_usec) / 1e6);
	if (rs)
		rs_free(v, rep); /* opens the gate: held writes now go to the replica too */
}

static void on_ack(struct vvol *v, struct resync *rs, const struct tdo_rm_ack *a)
{
	if (a->ak_status) {
		rs_abort(v, rs->rep, "the replica could not apply a copy");
		return;
	}
	rs->unacked -= a->ak_id < rs->unacked ? a->ak_id : rs->unacked;
	rs_pump(v, rs);
}

static void on_end(struct vvol *v, struct resync *rs, const struct tdo_rm_rs *m)
{
	if (rs->phase != RS_WAIT_END || m->rs_status) {
		rs_abort(v, rs->rep, "the replica gave up");
		return;
	}
	rs->phase = RS_PROPOSE;
	if (!cfg_queue_state(v, rs->rep, TDO_REP_IN_SYNC, rs_in_sync_done))
		rs_abort(v, rs->rep, "out of memory");
}

void rs_catching_up_done(struct vvol *v, int status, const char *why, void *arg)
{
	(void)why;
	int rep = (int)(intptr_t)arg;
	if (!status && v->primary && v->conf.vc_state[rep] == TDO_REP_CATCHING_UP)
		rs_start(v, rep);
}

/* ---- the replica's messages ---- */

void rs_on_state(struct tdo_vtier *vt, int peer, const struct tdo_rm_rs *m)
{
	struct vvol *v;
	struct resync *rs = rs_of(vt, peer, m->rs_name, &v);
	if (rs)
		on_state(v, rs, m);
}

void rs_on_map(struct tdo_vtier *vt, int peer, const struct tdo_rm_rs *m, const void *tail, uint32_t tlen)
{
	struct vvol *v;
	struct resync *rs = rs_of(vt, peer, m->rs_name, &v);
	if (rs)
		on_map(v, rs, m, tail, tlen);
}

void rs_on_ack(struct tdo_vtier *vt, int peer, const struct tdo_rm_ack *a)
{
	struct vvol *v;
	struct resync *rs = rs_of(vt, peer, a->ak_name, &v);
	if (rs)
		on_ack(v, rs, a);
}

void rs_on_end(struct tdo_vtier *vt, int peer, const struct tdo_rm_rs *m)
{
	struct vvol *v;
	struct resync *rs = rs_of(vt, peer, m->rs_name, &v);
	if (rs)
		on_end(v, rs, m);
}
