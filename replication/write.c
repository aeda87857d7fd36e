/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the write path, both sides.
 *
 * The primary gives each write the volume's next LSN, sends it to every
 * in-sync replica and writes it locally at once; the client hears "done"
 * when the local write and every in-sync replica's acknowledgement are
 * durable (replicas acknowledge one LSN each). A replica that refuses,
 * does not answer within ack_timeout_ms (the tick), or whose connection
 * drops is proposed out of date (wr_mark_out_of_date); the writes it
 * missed complete only once that change is in force (wr_complete_ready
 * masks each write's wait with the in-sync set in force, never with one
 * still proposed). Reads and flushes go to the local engine: every
 * acknowledged write is already durable on every in-sync copy.
 *
 * A replica applies a WRITE only of the configuration's epoch, from the
 * configuration's primary, at exactly the LSN it expects next, while it
 * is in-sync with no resync into it running; RS_DATA (resync copies,
 * resync_replica.c) only while a resync into it runs. It answers every
 * one, with the reason when it refuses (-ESTALE: older epoch, and the
 * newer configuration is sent back; -EILSEQ: not the LSN it expects).
 *
 * A primary whose engine is poisoned (a failed device write or sync:
 * every later write fails) cannot store writes any more, so it gives the
 * role up: wr_local_failed marks the volume failed, admits nothing more
 * (new writes are held for the new primary, or fail when no replica can
 * take over) and has an in-sync replica promote itself (promote.c). The
 * failed write itself ends with its error, whatever the replicas said.
 *
 * Must never: acknowledge a write an in-sync replica has not made
 * durable unless the change that took it out is in force; apply a write
 * of an older epoch, or out of LSN order; let a replica that is being
 * resynced take live writes (a copy could overtake a write it has).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

uint32_t wr_insync_mask(struct vvol *v)
{
	const struct tdo_rm_vconf *c = &v->conf;
	uint32_t m = 0;
	for (uint32_t i = 0; i < c->vc_nrep; i++)
		if ((int)i != v->my_rep && c->vc_state[i] == TDO_REP_IN_SYNC)
			m |= 1u << i;
	return m;
}

void wr_complete_ready(struct vvol *v)
{
	uint32_t insync = wr_insync_mask(v);
	struct tdo_list *l = v->inflight.next;
	while (l != &v->inflight) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		l = l->next;
		r->wait &= insync;
		if (r->local_done && r->wait == 0) {
			tdo_list_del(&r->link);
			vt_req_finish(r, r->status);
		}
	}
}

/* The change taking replica REP out of date ended. */
static void mark_done(struct vvol *v, int status, const char *why, void *arg)
{
	int rep = (int)(intptr_t)arg;
	v->marking &= ~(1u << rep);
	if (status)
		tdo_log(TDO_LOG_WARN, "vtier", "%s: taking %s out of the in-sync set failed: %s (retried)",
		        v->conf.vc_name, v->conf.vc_rep[rep], why ? why : tdo_strerror(status));
}

void wr_mark_out_of_date(struct vvol *v, int rep, const char *why)
{
	if (!v->primary || rep < 0 || rep == v->my_rep || (v->marking & (1u << rep)))
		return;
	if (v->conf.vc_state[rep] != TDO_REP_IN_SYNC)
		return; /* not in the in-sync set in force: nothing waits on it */
	if (v->rs[rep])
		rs_abort(v, rep, why);
	tdo_log(TDO_LOG_WARN, "vtier", "%s: replica %s out of date: %s", v->conf.vc_name, v->conf.vc_rep[rep], why);
	v->marking |= 1u << rep;
	if (!cfg_queue_state(v, rep, TDO_REP_OUT_OF_DATE, mark_done))
		v->marking &= ~(1u << rep); /* the tick tries again */
}

static void local_write_done(void *arg, int status)
{
	struct vreq *r = arg;
	struct vvol *v = r->v;
	v->io_active--;
	r->local_done = true;
	if (status && !r->status)
		r->status = status;
	if (status) {
		tdo_log(TDO_LOG_ERROR, "vtier", "%s: local write at LSN %" PRIu64 " failed: %s", v->conf.vc_name, r->lsn,
		        tdo_strerror(status));
		wr_local_failed(v, status);
	}
	wr_complete_ready(v);
	for (int i = 0; i < TDO_REP_MAX; i++)
		if (v->rs[i] && v->rs[i]->phase == RS_FINAL)
			rs_pump(v, v->rs[i]);
}

/* The engine's op for a TDO_RMOP_ write, zero, trim (or RS_DATA's hole). */
static int engine_op(int op)
{
	return op == TDO_RMOP_WRITE ? TDO_OP_WRITE : op == TDO_RMOP_ZERO ? TDO_OP_ZERO : TDO_OP_TRIM;
}

void wr_local_failed(struct vvol *v, int status)
{
	struct tdo_engine_stats st;
	if (!v->primary || v->failed)
		return;
	tdo_engine_stats(v->vt->e, &st);
	if (!st.poisoned && status != TDO_EPOISON)
		return; /* this write alone (a full volume, a bad range): the engine goes on */
	v->failed = true;
	tdo_log(TDO_LOG_ERROR, "vtier", "%s: this node's engine refuses writes: giving up the primary role",
	        v->conf.vc_name);
	/* the hand-off holds new writes first: a resync's abort below may open
	 * its gate, and what it held then waits for the new primary too */
	pm_hand_off(v);
	for (int i = 0; i < TDO_REP_MAX; i++)
		if (v->rs[i])
			rs_abort(v, i, "this node's engine failed");
}

void wr_admit(struct vvol *v, struct vreq *r)
{
	struct tdo_vtier *vt = v->vt;
	if (v->gate) {
		tdo_list_add_tail(&v->held, &r->link);
		return;
	}
	if (v->failed) {
		vt_req_finish(r, -EIO); /* nothing is sent: no replica takes a write this node cannot store */
		return;
	}
	r->lsn = ++v->next_lsn;
	r->wait = wr_insync_mask(v);
	r->sent_usec = tdo_now_usec();
	struct tdo_rm_io io = { .io_epoch = v->conf.vc_epoch, .io_op = (uint16_t)r->op,
	                        .io_flags = (uint16_t)r->flags, .io_lsn = r->lsn, .io_off = r->off, .io_len = r->len };
	snprintf(io.io_name, sizeof(io.io_name), "%s", v->conf.vc_name);
	for (uint32_t i = 0; i < v->conf.vc_nrep; i++) {
		if ((int)i == v->my_rep || v->conf.vc_state[i] != TDO_REP_IN_SYNC || (v->marking & (1u << i)))
			continue; /* one being taken out gets nothing more; its write completes when that is in force */
		int peer = vt_rep_peer(v, (int)i);
		if (peer < 0 || vt_send(vt, peer, TDO_RM_WRITE, &io, sizeof(io), r->op == TDO_RMOP_WRITE ? r->buf : NULL,
		                        r->op == TDO_RMOP_WRITE ? (uint32_t)r->len : 0))
			wr_mark_out_of_date(v, (int)i, "not connected");
	}
	rs_mark_dirty(v, r->off, r->len);
	tdo_list_add_tail(&v->inflight, &r->link);
	v->io_active++;
	int rc = tdo_engine_submit_at(vt->e, engine_op(r->op), (uint32_t)v->local_id, r->off, r->len, r->buf,
	                              r->op == TDO_RMOP_ZERO ? r->flags : 0, r->lsn, v->conf.vc_epoch,
	                              local_write_done, r);
	if (rc) {
		v->io_active--;
		r->local_done = true;
		r->status = rc;
		wr_local_failed(v, rc);
		wr_complete_ready(v);
	}
}

/* Writes on V that wait only for replicas now will not hear from them:
 * they end with STATUS (unless KEEP and they failed already); those still
 * in the engine end from its callback. */
static void fail_inflight(struct vvol *v, int status, bool keep)
{
	struct tdo_list *l = v->inflight.next;
	while (l != &v->inflight) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		l = l->next;
		r->wait = 0;
		if (!keep || !r->status)
			r->status = status;
		if (r->local_done) {
			tdo_list_del(&r->link);
			vt_req_finish(r, r->status);
		}
	}
}

void wr_step_down(struct vvol *v)
{
	v->marking = 0;
	v->failed = v->handing_off = false; /* an ask still out ends in pm_handoff_done, which sees this */
	/* writes whose replicas never answered: their outcome is unknown */
	fail_inflight(v, -EIO, false);
	/* held writes go to the new primary */
	while (!tdo_list_empty(&v->held)) {
		struct vreq *r = tdo_list_item(v->held.next, struct vreq, link);
		tdo_list_del(&r->link);
		r->deadline_usec = tdo_now_usec() + FWD_WAIT_MS * 1000ull;
		fwd_send(v->vt, r);
	}
	/* the gate opens; a resync still waiting for its read or flush no
	 * longer holds it, so its later rs_free leaves the count alone */
	for (int i = 0; i < TDO_REP_MAX; i++)
		if (v->rs[i])
			v->rs[i]->gated = false;
	v->gate = 0;
}

void wr_stop(struct vvol *v)
{
	fail_inflight(v, -ESHUTDOWN, true);
}

static void local_rw_done(void *arg, int status)
{
	struct vreq *r = arg;
	r->v->io_active--;
	vt_req_finish(r, status);
}

int wr_primary_io(struct vvol *v, struct vreq *r)
{
	int rc;
	switch (r->op) {
	case TDO_RMOP_READ:
		/* a failed primary's copy stops being the volume's as soon as the
		 * replica it handed off to is primary, before this node may hear
		 * of it (it may not even store that configuration): no reads */
		if (v->failed)
			return -EIO;
		v->io_active++;
		rc = tdo_engine_read(v->vt->e, (uint32_t)v->local_id, r->off, (uint32_t)r->len, r->buf, local_rw_done, r);
		if (rc)
			v->io_active--;
		return rc;
	case TDO_RMOP_FLUSH:
		/* every acknowledged write is durable on every in-sync copy already */
		v->io_active++;
		rc = tdo_engine_flush(v->vt->e, local_rw_done, r);
		if (rc)
			v->io_active--;
		return rc;
	case TDO_RMOP_WRITE:
	case TDO_RMOP_ZERO:
	case TDO_RMOP_TRIM:
		if (!r->len || r->off % TDO_SECTOR_SIZE || r->len % TDO_SECTOR_SIZE || r->off + r->len < r->off ||
		    r->off + r->len > v->conf.vc_size || (r->op == TDO_RMOP_WRITE && r->len > TDO_RM_MAX_PAYLOAD - 4096))
			return -EINVAL;
		wr_admit(v, r);
		return 0;
	}
	return -EINVAL;
}

/* ---- the replica's side ---- */

/* A WRITE or RS_DATA being applied here; answered from its callback. */
struct rapply {
	struct tdo_vtier *vt;
	int peer;
	uint64_t lsn;
	uint32_t epoch;
	char name[TDO_NAME_MAX + 1];
	bool resync;
	uint64_t bytes;             /* RS_DATA: the data bytes it carried (0 for a hole or zeroes) */
	void *buf;
};

static void wack(struct tdo_vtier *vt, int peer, uint16_t type, const char *name, uint32_t epoch, int status,
                 uint64_t lsn, uint64_t id)
{
	struct tdo_rm_ack a = { .ak_epoch = epoch, .ak_status = status, .ak_lsn = lsn, .ak_id = id };
	snprintf(a.ak_name, sizeof(a.ak_name), "%s", name);
	vt_send(vt, peer, type, &a, sizeof(a), NULL, 0);
}

static void replica_apply_done(void *arg, int status)
{
	struct rapply *ra = arg;
	struct vvol *v = vt_find_vol(ra->vt, ra->name);
	if (v)
		v->io_active--;
	if (ra->resync) {
		wack(ra->vt, ra->peer, TDO_RM_RS_ACK, ra->name, ra->epoch, status, ra->lsn, ra->bytes);
		if (v) {
			v->rs_pending--;
			if (v->rs_done_peer >= 0 && v->rs_pending == 0)
				rsr_copies_done(v);
		}
	} else {
		wack(ra->vt, ra->peer, TDO_RM_WACK, ra->name, ra->epoch, status, ra->lsn, 0);
		if (status && v)
			v->expect_lsn = 0; /* we no longer have every write: out of date */
	}
	free(ra->buf);
	free(ra);
}

void wr_on_write(struct tdo_vtier *vt, int peer, const struct tdo_rm_io *io, const void *data, uint32_t dlen,
                 bool resync)
{
	char name[TDO_NAME_MAX + 1];
	if (!vconf_wire_name(io->io_name, name)) {
		tdo_cluster_drop(vt->c, peer, "write with a bad volume name");
		return;
	}
	uint16_t ackt = resync ? TDO_RM_RS_ACK : TDO_RM_WACK;
	struct vvol *v = vt_find_vol(vt, name);
	uint64_t nbytes = io->io_op == TDO_RMOP_WRITE ? io->io_len : 0;
	if (!v || v->conf.vc_deleted || v->local_id < 0) {
		wack(vt, peer, ackt, name, v ? v->conf.vc_epoch : 0, TDO_ENOVOL, io->io_lsn, nbytes);
		return;
	}
	const char *sender = tdo_cluster_peer_id(vt->c, peer);
	int st = 0;
	if (io->io_epoch < v->conf.vc_epoch)
		st = -ESTALE;
	else if (io->io_epoch > v->conf.vc_epoch || strcmp(sender, v->conf.vc_rep[v->conf.vc_primary]))
		st = -EAGAIN; /* we have not heard of that primary yet */
	else if ((io->io_op == TDO_RMOP_WRITE) != (dlen > 0) || (io->io_op == TDO_RMOP_WRITE && dlen != io->io_len) ||
	         !io->io_len || io->io_off + io->io_len < io->io_off || io->io_off + io->io_len > v->conf.vc_size)
		st = -EINVAL; /* a trim or zeroes may be as long as the volume, no longer */
	else if (!resync && (v->my_rep < 0 || v->conf.vc_state[v->my_rep] != TDO_REP_IN_SYNC || v->rs_active ||
	                     io->io_lsn != v->expect_lsn || v->expect_lsn == 0))
		st = -EILSEQ;
	else if (resync && !v->rs_active)
		st = -EILSEQ;
	if (st) {
		if (st == -ESTALE)
			cfg_send(vt, peer, &v->conf, true); /* tell the old primary who is primary now */
		wack(vt, peer, ackt, name, v->conf.vc_epoch, st, io->io_lsn, nbytes);
		return;
	}
	struct rapply *ra = calloc(1, sizeof(*ra));
	if (!ra || (dlen && posix_memalign(&ra->buf, 4096, dlen))) {
		free(ra);
		wack(vt, peer, ackt, name, v->conf.vc_epoch, -ENOMEM, io->io_lsn, nbytes);
		return;
	}
	if (dlen)
		memcpy(ra->buf, data, dlen);
	ra->vt = vt;
	ra->peer = peer;
	ra->lsn = io->io_lsn;
	ra->epoch = v->conf.vc_epoch;
	ra->resync = resync;
	ra->bytes = nbytes; /* RS_ACK: the data bytes it carried, what the primary counts unacknowledged */
	snprintf(ra->name, sizeof(ra->name), "%s", name);
	int op = engine_op(io->io_op);
	unsigned flags = io->io_op == TDO_RMOP_ZERO ? (io->io_flags & TDO_ZERO_NO_HOLE) : 0;
	if (!resync)
		v->expect_lsn++;
	else
		v->rs_pending++;
	v->io_active++;
	int rc = tdo_engine_submit_at(vt->e, op, (uint32_t)v->local_id, io->io_off, io->io_len, ra->buf, flags,
	                              io->io_lsn ? io->io_lsn : 1, v->conf.vc_epoch, replica_apply_done, ra);
	if (rc) {
		v->io_active--;
		if (resync)
			v->rs_pending--;
		else
			v->expect_lsn = 0;
		wack(vt, peer, ackt, name, v->conf.vc_epoch, rc, io->io_lsn, nbytes);
		free(ra->buf);
		free(ra);
	}
}

void wr_on_wack(struct tdo_vtier *vt, int peer, const struct tdo_rm_ack *a)
{
	char name[TDO_NAME_MAX + 1];
	if (!vconf_wire_name(a->ak_name, name))
		return;
	struct vvol *v = vt_find_vol(vt, name);
	if (!v || !v->primary)
		return;
	int rep = vconf_rep_index(&v->conf, tdo_cluster_peer_id(vt->c, peer));
	if (rep < 0)
		return;
	for (struct tdo_list *l = v->inflight.next; l != &v->inflight; l = l->next) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		if (r->lsn != a->ak_lsn)
			continue;
		if (a->ak_status == 0) {
			r->wait &= ~(1u << rep);
			wr_complete_ready(v);
		} else {
			char why[96];
			snprintf(why, sizeof(why), "refused LSN %" PRIu64 ": %s", a->ak_lsn, strerror(-a->ak_status));
			wr_mark_out_of_date(v, rep, why);
		}
		return;
	}
}
