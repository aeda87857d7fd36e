/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: resync, the replica's side (the primary's is resync.c).
 *
 * On RS_BEGIN the replica records, durably in the state file, that a
 * resync into its copy has begun and the LSN and epoch its copy was
 * trusted at (its newest durable write; writes still in flight may never
 * be), and only then answers RS_STATE with them: a replica that restarts
 * mid-resync knows its copy is a mix and reports the same trust point.
 * From then on it refuses live WRITEs and takes RS_DATA copies at the
 * primary's LSN. RS_SCAN asks for its allocated blocks as runs, marked
 * SUSPECT where written after the primary's bound (RS_MAP, in messages
 * of at most RS_MAP_RUNS runs). RS_DONE waits for every copy submitted
 * to be durable, sets the copy's LSN to the primary's, stores that the
 * resync ended, and answers RS_END.
 *
 * Must never: act on a resync message that is not from the primary of
 * the configuration's epoch (answered RS_END -ESTALE, with our newer
 * configuration when the sender's epoch is older); answer RS_STATE
 * before the resync's start is durable; answer RS_END with success
 * before every copy and the end are durable.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define RS_MAP_RUNS     65536        /* runs per RS_MAP message */

static void rs_reply(struct tdo_vtier *vt, int peer, struct vvol *v, uint16_t type, int status, uint64_t lsn,
                     uint32_t log_epoch)
{
	struct tdo_rm_rs m = { .rs_epoch = v->conf.vc_epoch, .rs_status = status, .rs_lsn = lsn,
	                       .rs_log_epoch = log_epoch };
	snprintf(m.rs_name, sizeof(m.rs_name), "%s", v->conf.vc_name);
	vt_send(vt, peer, type, &m, sizeof(m), NULL, 0);
}

static bool from_primary(struct tdo_vtier *vt, struct vvol *v, int peer, uint32_t epoch)
{
	return v && !v->conf.vc_deleted && epoch == v->conf.vc_epoch &&
	       !strcmp(tdo_cluster_peer_id(vt->c, peer), v->conf.vc_rep[v->conf.vc_primary]);
}

struct map_ctx {
	struct tdo_vtier *vt;
	int peer;
	struct vvol *v;
	uint64_t bound;
	struct tdo_rm_run *runs;
	uint64_t n;
};

static void map_flush(struct map_ctx *x, bool last)
{
	struct tdo_rm_rs m = { .rs_epoch = x->v->conf.vc_epoch, .rs_last = last, .rs_nruns = x->n };
	snprintf(m.rs_name, sizeof(m.rs_name), "%s", x->v->conf.vc_name);
	vt_send(x->vt, x->peer, TDO_RM_RS_MAP, &m, sizeof(m), x->runs, (uint32_t)(x->n * sizeof(struct tdo_rm_run)));
	x->n = 0;
}

static int map_add(void *arg, uint64_t block, uint64_t lsn, unsigned state)
{
	(void)state;
	struct map_ctx *x = arg;
	uint32_t kind = lsn > x->bound ? TDO_RUN_SUSPECT : TDO_RUN_ALLOC;
	if (x->n) {
		struct tdo_rm_run *p = &x->runs[x->n - 1];
		if (p->ru_kind == kind && p->ru_block + p->ru_count == block && p->ru_count < UINT32_MAX) {
			p->ru_count++;
			return 0;
		}
	}
	if (x->n == RS_MAP_RUNS)
		map_flush(x, false);
	x->runs[x->n++] = (struct tdo_rm_run){ block, 1, kind };
	return 0;
}

struct rs_fin {
	struct tdo_vtier *vt;
	char name[TDO_NAME_MAX + 1];
	int peer;
	uint64_t lsn;
};

/* The end of the resync into this copy is stored (or not): tell the primary. */
static void rs_fin_stored(struct tdo_vtier *vt, int status, void *arg)
{
	struct rs_fin *f = arg;
	struct vvol *v = vt->stopping ? NULL : vt_find_vol(vt, f->name);
	if (v) {
		tdo_log(status ? TDO_LOG_WARN : TDO_LOG_INFO, "vtier", "%s: resync into this copy %s at LSN %" PRIu64,
		        f->name, status ? "failed" : "complete", f->lsn);
		rs_reply(vt, f->peer, v, TDO_RM_RS_END, status ? -EIO : 0, f->lsn, 0);
	}
	free(f);
}

static void rs_fin_done(void *arg, int status)
{
	struct rs_fin *f = arg;
	struct vvol *v = vt_find_vol(f->vt, f->name);
	if (v && !status) {
		v->rs_active = false;
		v->expect_lsn = f->lsn + 1;
		if (!st_store(f->vt, rs_fin_stored, f))
			return;
		status = -ENOMEM;
	}
	rs_fin_stored(f->vt, status, f);
}

void rsr_copies_done(struct vvol *v)
{
	struct tdo_vtier *vt = v->vt;
	int peer = v->rs_done_peer;
	v->rs_done_peer = -1;
	struct rs_fin *f = calloc(1, sizeof(*f));
	if (!f) {
		rs_reply(vt, peer, v, TDO_RM_RS_END, -ENOMEM, 0, 0);
		return;
	}
	f->vt = vt;
	f->peer = peer;
	f->lsn = v->rs_done_lsn;
	snprintf(f->name, sizeof(f->name), "%s", v->conf.vc_name);
	int rc = tdo_vol_set_lsn(vt->e, v->conf.vc_name, f->lsn, v->conf.vc_epoch, rs_fin_done, f);
	if (rc) {
		free(f);
		rs_reply(vt, peer, v, TDO_RM_RS_END, rc, 0, 0);
	}
}

struct rs_begin {
	struct vvol *v;
	int peer;
};

/* This copy is stored as under resync (or not): answer the primary. */
static void rs_begin_stored(struct tdo_vtier *vt, int status, void *arg)
{
	struct rs_begin *b = arg;
	struct vvol *v = b->v;
	int peer = b->peer;
	free(b);
	if (vt->stopping)
		return;
	v->rs_storing = false;
	if (status) {
		v->rs_active = false;
		rs_reply(vt, peer, v, TDO_RM_RS_END, -EIO, 0, 0);
	} else
		rs_reply(vt, peer, v, TDO_RM_RS_STATE, 0, v->rs_lsn, v->rs_epoch);
}

void rsr_on_msg(struct tdo_vtier *vt, int peer, uint16_t type, const struct tdo_rm_rs *m)
{
	char name[TDO_NAME_MAX + 1];
	if (!vconf_wire_name(m->rs_name, name))
		return;
	struct vvol *v = vt_find_vol(vt, name);
	if (!from_primary(vt, v, peer, m->rs_epoch) || v->local_id < 0 || v->my_rep < 0) {
		if (v) {
			if (m->rs_epoch < v->conf.vc_epoch)
				cfg_send(vt, peer, &v->conf, true);
			rs_reply(vt, peer, v, TDO_RM_RS_END, -ESTALE, 0, 0);
		}
		return;
	}
	switch (type) {
	case TDO_RM_RS_BEGIN:
		if (!v->rs_active) {
			/* what is durable here: the writes still in flight may never be */
			struct tdo_vol_info vi;
			if (tdo_vol_lookup(vt->e, v->conf.vc_name, &vi)) {
				rs_reply(vt, peer, v, TDO_RM_RS_END, TDO_ENOVOL, 0, 0);
				return;
			}
			v->rs_lsn = vi.durable_lsn;
			v->rs_epoch = vi.durable_epoch;
			v->rs_active = true;
			v->rs_storing = true;
			v->expect_lsn = 0;
			struct rs_begin *b = calloc(1, sizeof(*b));
			if (b) {
				b->v = v;
				b->peer = peer;
			}
			if (!b || st_store(vt, rs_begin_stored, b)) {
				free(b);
				v->rs_active = v->rs_storing = false;
				rs_reply(vt, peer, v, TDO_RM_RS_END, -ENOMEM, 0, 0);
			}
			return;
		}
		if (!v->rs_storing) /* else the store in flight answers */
			rs_reply(vt, peer, v, TDO_RM_RS_STATE, 0, v->rs_lsn, v->rs_epoch);
		return;
	case TDO_RM_RS_SCAN: {
		struct map_ctx x = { vt, peer, v, m->rs_lsn, calloc(RS_MAP_RUNS, sizeof(struct tdo_rm_run)), 0 };
		if (!x.runs) {
			rs_reply(vt, peer, v, TDO_RM_RS_END, -ENOMEM, 0, 0);
			return;
		}
		tdo_engine_scan(vt->e, (uint32_t)v->local_id, 0, map_add, &x);
		map_flush(&x, true);
		free(x.runs);
		return;
	}
	case TDO_RM_RS_DONE:
		if (!v->rs_active) {
			rs_reply(vt, peer, v, TDO_RM_RS_END, -EILSEQ, 0, 0);
			return;
		}
		v->rs_done_peer = peer;
		v->rs_done_lsn = m->rs_lsn;
		if (v->rs_pending == 0)
			rsr_copies_done(v);
		return;
	}
}
