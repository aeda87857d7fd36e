/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the volume tier's entry points (testudo/vtier.h): start, stop
 * and free; the tick; the cluster's up and down hooks (its message hook
 * is dispatch.c's); the front end's calls (handles, I/O, map, info,
 * list); and the few helpers every file of the tier uses. What happens
 * behind them lives in the other files of replication/ (internal.h
 * lists them).
 *
 * One loop, one tick: every TICK_MS the tick times out proposals and
 * writes a replica did not acknowledge, retries local changes that
 * failed, moves resyncs on, starts resyncs of replicas that need one,
 * retries forwarded requests and times out verifies and promotes. The
 * tick and the hooks only call into those files; each file keeps its own
 * lists (the up and down hooks and the stop hand each file its part).
 *
 * The stop fails everything that waits on another node and sends
 * nothing more; what the engine still has in flight finishes from its
 * callbacks, so the tier is freed only after the engine closed.
 *
 * Must never: send a message or handle one once stopping; call a front
 * end's callback inside the call that was given it (tdo_vhandle_io
 * returns an error instead); let a handle reach a later incarnation of
 * its volume (the generation check); free a volume while the tier lives.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define TICK_MS         100

/* Nothing once the node is stopping: the cluster's connections are going away. */
int vt_send(struct tdo_vtier *vt, int peer, uint16_t type, const void *a, uint32_t alen, const void *b,
            uint32_t blen)
{
	if (vt->stopping)
		return -ESHUTDOWN;
	if (peer < 0)
		return -EINVAL;
	return tdo_cluster_send(vt->c, peer, type, a, alen, b, blen);
}

int vt_rep_peer(struct vvol *v, int i)
{
	if (i < 0 || i >= (int)v->conf.vc_nrep || !strcmp(v->conf.vc_rep[i], v->vt->me))
		return -1;
	return tdo_cluster_peer_index(v->vt->c, v->conf.vc_rep[i]);
}

/* FNV-1a of a volume name, for vt->vol_hash. */
static unsigned name_hash(const char *name)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h % VT_HASH_SIZE;
}

struct vvol *vt_find_vol(struct tdo_vtier *vt, const char *name)
{
	for (struct vvol *v = vt->vol_hash[name_hash(name)]; v; v = v->hnext)
		if (!strcmp(v->conf.vc_name, name))
			return v;
	return NULL;
}

struct vvol *vt_live_vol(struct tdo_vtier *vt, const char *name, char *err, size_t errlen)
{
	struct vvol *v = vt_find_vol(vt, name);
	if (!v || v->conf.vc_deleted || !v->conf.vc_version) {
		snprintf(err, errlen, "no volume '%s'", name);
		return NULL;
	}
	return v;
}

struct vvol *vt_vol_new(struct tdo_vtier *vt, const struct tdo_rm_vconf *c)
{
	struct vvol *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	*v = (struct vvol){ .vt = vt, .conf = *c, .local_id = -1, .my_rep = -1, .rs_done_peer = -1, .ack_peer = -1 };
	tdo_list_init(&v->inflight);
	tdo_list_init(&v->held);
	tdo_list_init(&v->changes);
	v->next = vt->vols;
	vt->vols = v;
	unsigned h = name_hash(v->conf.vc_name);
	v->hnext = vt->vol_hash[h];
	vt->vol_hash[h] = v;
	return v;
}

void vt_fail_list(struct tdo_list *head, int status)
{
	while (!tdo_list_empty(head)) {
		struct vreq *r = tdo_list_item(head->next, struct vreq, link);
		tdo_list_del(&r->link);
		vt_req_finish(r, status);
	}
}

void vt_req_finish(struct vreq *r, int status)
{
	r->cb(r->arg, status);
	if (r->own_buf)
		free(r->buf);
	free(r);
}

static void vol_tick(struct tdo_vtier *vt, struct vvol *v, uint64_t now)
{
	if (v->prop && !v->prop->storing && now > v->prop->deadline_usec)
		cfg_prop_finish(v, -ETIMEDOUT, "no majority of the nodes answered in time");
	if (!v->prop && tdo_list_empty(&v->changes))
		cfg_reconcile(v);
	if (!v->primary)
		return;
	pm_hand_off(v); /* a failed copy: hand the role to a replica (nothing otherwise) */
	uint64_t tmo = (uint64_t)vt->o.ack_timeout_ms * 1000;
	for (struct tdo_list *l = v->inflight.next; l != &v->inflight; l = l->next) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		if (now - r->sent_usec < tmo)
			break; /* LSN order is age order */
		for (int i = 0; i < (int)v->conf.vc_nrep; i++)
			if (r->wait & (1u << i)) {
				char why[80];
				snprintf(why, sizeof(why), "no acknowledgement of LSN %" PRIu64 " within %u ms", r->lsn,
				         vt->o.ack_timeout_ms);
				wr_mark_out_of_date(v, i, why);
			}
	}
	if (v->failed)
		return; /* it resyncs no one: its role goes to a replica */
	for (int i = 0; i < (int)v->conf.vc_nrep; i++) {
		if (i == v->my_rep)
			continue;
		if (v->rs[i]) {
			rs_pump(v, v->rs[i]);
			continue;
		}
		int peer = vt_rep_peer(v, i);
		if (peer < 0 || !tdo_cluster_peer_up(vt->c, peer) || v->prop || (v->marking & (1u << i)))
			continue;
		if (v->conf.vc_state[i] == TDO_REP_CATCHING_UP)
			rs_start(v, i);
		else if (v->conf.vc_state[i] == TDO_REP_OUT_OF_DATE)
			cfg_queue_state(v, i, TDO_REP_CATCHING_UP, rs_catching_up_done); /* out of memory: the next tick */
	}
}

static void tick_cb(uv_timer_t *t)
{
	struct tdo_vtier *vt = t->data;
	uint64_t now = tdo_now_usec();
	for (struct vvol *v = vt->vols; v; v = v->next)
		vol_tick(vt, v, now);
	fwd_retry(vt);
	ver_tick(vt, now);
	pm_tick(vt, now);
}

static void hook_up(void *arg, int peer)
{
	struct tdo_vtier *vt = arg;
	/* what is in force: a proposal still open is not ours to spread */
	for (struct vvol *v = vt->vols; v; v = v->next) {
		if (v->conf.vc_version)
			cfg_send(vt, peer, &v->conf, true);
	}
	fwd_retry(vt);
}

static void hook_down(void *arg, int peer)
{
	struct tdo_vtier *vt = arg;
	const char *id = tdo_cluster_peer_id(vt->c, peer);
	for (struct vvol *v = vt->vols; v; v = v->next) {
		int rep = vconf_rep_index(&v->conf, id);
		if (rep < 0)
			continue;
		if (v->rs[rep])
			rs_abort(v, rep, "connection lost");
		if (v->primary && v->conf.vc_state[rep] == TDO_REP_IN_SYNC)
			wr_mark_out_of_date(v, rep, "connection lost");
		if (v->prop && !((v->prop->acked | v->prop->nacked) & (1u << peer))) {
			v->prop->nacked |= 1u << peer;
			cfg_prop_check(v);
		}
	}
	fwd_peer_down(vt, peer);
	ver_peer_down(vt, id);
	pm_peer_down(vt, peer);
}

int tdo_vtier_start(uv_loop_t *loop, struct tdo_engine *e, struct tdo_cluster *c,
                    const struct tdo_vtier_opts *o, struct tdo_vtier **out, char *err, size_t errlen)
{
	struct tdo_vtier *vt = calloc(1, sizeof(*vt));
	if (!vt)
		return -ENOMEM;
	vt->loop = loop;
	vt->e = e;
	vt->c = c;
	vt->o = *o;
	if (!vt->o.ack_timeout_ms)
		vt->o.ack_timeout_ms = 1000;
	if (!vt->o.resync_rate)
		vt->o.resync_rate = 256ull << 20;
	vt->state_path = o->state_path ? strdup(o->state_path) : NULL;
	snprintf(vt->me_id, sizeof(vt->me_id), "%s",
	         c ? tdo_cluster_node_id(c) : o->node_id && *o->node_id ? o->node_id : "local");
	vt->me = vt->me_id;
	vt->nnodes = tdo_cluster_npeers(c) + 1;
	tdo_list_init(&vt->fwd_sent);
	tdo_list_init(&vt->fwd_wait);
	tdo_list_init(&vt->sums);
	tdo_list_init(&vt->promotes);
	tdo_list_init(&vt->st.next);
	tdo_list_init(&vt->st.cur);
	int rc = o->state_path && !vt->state_path ? -ENOMEM : vt->state_path ? st_load(vt, err, errlen) : 0;
	if (rc) {
		while (vt->vols) {
			struct vvol *v = vt->vols;
			vt->vols = v->next;
			free(v);
		}
		free(vt->state_path);
		free(vt);
		return rc;
	}
	/* the engine's volumes no configuration names: this node's alone */
	struct tdo_vol_info one;
	int n = tdo_vol_list(e, &one, 0);
	struct tdo_vol_info *vi = calloc((size_t)n + 1, sizeof(*vi));
	bool changed = false;
	if (vi) {
		n = tdo_vol_list(e, vi, n);
		for (int i = 0; i < n; i++) {
			struct vvol *v = vt_find_vol(vt, vi[i].name);
			if (v && !v->conf.vc_deleted)
				continue;
			uint32_t epoch = v ? v->conf.vc_epoch + 1 : 1;
			if (vi[i].epoch > epoch)
				epoch = vi[i].epoch; /* never below the epoch of the copy's newest write */
			struct tdo_rm_vconf cf = { .vc_size = vi[i].size, .vc_flags = vi[i].flags,
			                           .vc_epoch = epoch,
			                           .vc_version = v ? v->conf.vc_version + 1 : 1,
			                           .vc_ctime = vi[i].ctime, .vc_nrep = 1, .vc_nhist = 1 };
			snprintf(cf.vc_name, sizeof(cf.vc_name), "%s", vi[i].name);
			snprintf(cf.vc_rep[0], sizeof(cf.vc_rep[0]), "%s", vt->me);
			cf.vc_state[0] = TDO_REP_IN_SYNC;
			cf.vc_hist[0].vh_epoch = cf.vc_epoch;
			cf.vc_hist[0].vh_start_lsn = vi[i].lsn;
			if (v)
				cfg_set(v, &cf);
			else
				vt_vol_new(vt, &cf);
			changed = true;
		}
		free(vi);
	}
	if (changed && st_save_now(vt)) {
		snprintf(err, errlen, "cannot write the state file %s", vt->state_path);
		tdo_vtier_free(vt);
		return -EIO;
	}
	for (struct vvol *v = vt->vols; v; v = v->next)
		cfg_reconcile(v);
	uv_timer_init(loop, &vt->tick);
	vt->tick.data = vt;
	uv_timer_start(&vt->tick, tick_cb, TICK_MS, TICK_MS);
	struct tdo_cluster_hooks h = { vt, hook_up, hook_down, dsp_msg };
	tdo_cluster_set_hooks(c, &h);
	*out = vt;
	return 0;
}

void tdo_vtier_stop(struct tdo_vtier *vt)
{
	if (!vt || vt->stopping)
		return;
	vt->stopping = true;
	struct tdo_cluster_hooks none = { 0 };
	tdo_cluster_set_hooks(vt->c, &none);
	fwd_stop(vt);
	ver_stop(vt);
	pm_stop(vt);
	for (struct vvol *v = vt->vols; v; v = v->next) {
		while (v->prop)
			cfg_prop_finish(v, -ESHUTDOWN, "the node is stopping");
		while (!tdo_list_empty(&v->changes)) {
			struct change *ch = tdo_list_item(v->changes.next, struct change, link);
			tdo_list_del(&ch->link);
			cfg_change_done(v, ch, -ESHUTDOWN, "the node is stopping");
		}
		vt_fail_list(&v->held, -ESHUTDOWN);
		adm_stop(v);
		for (int i = 0; i < TDO_REP_MAX; i++)
			if (v->rs[i] && !v->rs[i]->busy)
				rs_free(v, i);
	}
	for (struct vvol *v = vt->vols; v; v = v->next)
		wr_stop(v);
	uv_close((uv_handle_t *)&vt->tick, NULL);
}

void tdo_vtier_free(struct tdo_vtier *vt)
{
	if (!vt)
		return;
	if (!st_close(vt))
		return; /* the state file's write in flight frees it when it ends */
	while (vt->vols) {
		struct vvol *v = vt->vols;
		vt->vols = v->next;
		for (int i = 0; i < TDO_REP_MAX; i++)
			if (v->rs[i]) {
				free(v->rs[i]->dirty);
				free(v->rs[i]);
			}
		free(v->prop);
		free(v);
	}
	free(vt->state_path);
	free(vt);
}

const char *tdo_vtier_node_id(struct tdo_vtier *vt)
{
	return vt->me;
}

int tdo_vhandle_open(struct tdo_vtier *vt, const char *name, struct tdo_vhandle **out, uint64_t *size)
{
	struct vvol *v = vt_find_vol(vt, name);
	if (!v || !vconf_live(&v->conf))
		return TDO_ENOVOL;
	struct tdo_vhandle *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->vt = vt;
	h->v = v;
	h->gen = v->gen;
	*size = v->conf.vc_size;
	*out = h;
	return 0;
}

void tdo_vhandle_close(struct tdo_vhandle *h)
{
	free(h);
}

const char *tdo_vhandle_name(const struct tdo_vhandle *h)
{
	return h->v->conf.vc_name;
}

/* The handle's volume, or NULL once that incarnation is gone. */
static struct vvol *handle_vol(struct tdo_vhandle *h)
{
	struct vvol *v = h->v;
	return v->gen == h->gen && vconf_live(&v->conf) ? v : NULL;
}

int tdo_vhandle_io(struct tdo_vhandle *h, int op, unsigned flags, uint64_t off, uint64_t len, void *buf,
                   tdo_done_cb cb, void *arg)
{
	struct tdo_vtier *vt = h->vt;
	struct vvol *v = handle_vol(h);
	if (vt->stopping)
		return -ESHUTDOWN;
	if (!v)
		return TDO_ENOVOL;
	if (op < TDO_RMOP_READ || op > TDO_RMOP_FLUSH || (op != TDO_RMOP_FLUSH && len > TDO_RM_MAX_PAYLOAD - 4096 &&
	                                                  (op == TDO_RMOP_READ || op == TDO_RMOP_WRITE)))
		return -EINVAL;
	struct vreq *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	*r = (struct vreq){ .vt = vt, .v = v, .op = op, .flags = flags, .off = off, .len = len, .buf = buf,
	                    .cb = cb, .arg = arg, .from_peer = -1, .fwd_peer = -1 };
	if (v->primary) {
		int rc = wr_primary_io(v, r);
		if (rc)
			free(r);
		return rc;
	}
	r->deadline_usec = tdo_now_usec() + FWD_WAIT_MS * 1000ull;
	fwd_send(vt, r);
	return 0;
}

int tdo_vhandle_map(struct tdo_vhandle *h, uint64_t off, uint64_t len, tdo_map_fn fn, void *arg)
{
	struct vvol *v = handle_vol(h);
	if (!v)
		return TDO_ENOVOL;
	if (off > v->conf.vc_size || len > v->conf.vc_size - off)
		return -EINVAL;
	if (v->primary && v->local_id >= 0)
		return tdo_engine_map(h->vt->e, (uint32_t)v->local_id, off, len, fn, arg);
	return len ? fn(arg, off, len, 0) : 0; /* not the primary: all allocated, which is always safe */
}

static void vol_info(struct vvol *v, struct tdo_vinfo *o)
{
	struct tdo_vtier *vt = v->vt;
	const struct tdo_rm_vconf *c = &v->conf;
	memset(o, 0, sizeof(*o));
	snprintf(o->name, sizeof(o->name), "%s", c->vc_name);
	o->size = c->vc_size;
	o->flags = c->vc_flags;
	o->epoch = c->vc_epoch;
	o->version = c->vc_version;
	o->ctime = c->vc_ctime;
	snprintf(o->primary, sizeof(o->primary), "%s", c->vc_rep[c->vc_primary]);
	o->role = v->primary ? TDO_VROLE_PRIMARY : v->my_rep >= 0 ? TDO_VROLE_REPLICA : TDO_VROLE_NONE;
	o->nrep = c->vc_nrep < TDO_REP_MAX ? c->vc_nrep : TDO_REP_MAX;
	for (uint32_t i = 0; i < o->nrep; i++) {
		struct tdo_vrep_info *r = &o->rep[i];
		snprintf(r->node, sizeof(r->node), "%s", c->vc_rep[i]);
		r->state = c->vc_state[i];
		r->primary = i == c->vc_primary;
		r->down = strcmp(c->vc_rep[i], vt->me) && !tdo_cluster_peer_up(vt->c, vt_rep_peer(v, (int)i));
		struct resync *rs = v->primary ? v->rs[i] : NULL;
		if (!rs)
			continue;
		r->resync = true;
		r->resync_phase = rs->phase == RS_COPY ? TDO_RSP_COPYING : rs->phase == RS_FINAL ? TDO_RSP_FINAL :
		                  rs->phase == RS_WAIT_END || rs->phase == RS_PROPOSE ? TDO_RSP_FINISHING :
		                  TDO_RSP_STARTING;
		r->copied_blocks = rs->copied;
		r->total_blocks = rs->total;
		r->dirty_blocks = rs->ndirty;
	}
	struct tdo_vol_info vi;
	if (v->local_id >= 0 && !tdo_vol_lookup(vt->e, c->vc_name, &vi)) {
		o->local = true;
		o->lsn = v->primary ? v->next_lsn : vi.lsn;
		o->used_bytes = vi.used_bytes;
	}
	o->resync_into = v->rs_active;
}

int tdo_vtier_info(struct tdo_vtier *vt, const char *name, struct tdo_vinfo *out)
{
	struct vvol *v = vt_find_vol(vt, name);
	if (!v || !vconf_live(&v->conf))
		return TDO_ENOVOL;
	vol_info(v, out);
	return 0;
}

static int cmp_vol_name(const void *a, const void *b)
{
	return strcmp((*(struct vvol *const *)a)->conf.vc_name, (*(struct vvol *const *)b)->conf.vc_name);
}

int tdo_vtier_list(struct tdo_vtier *vt, struct tdo_vinfo *out, int max)
{
	int n = 0;
	for (struct vvol *v = vt->vols; v; v = v->next)
		n += vconf_live(&v->conf);
	if (max <= 0 || n == 0)
		return n;
	struct vvol **all = calloc((size_t)n, sizeof(*all));
	if (!all)
		return -ENOMEM;
	int k = 0;
	for (struct vvol *v = vt->vols; v; v = v->next)
		if (vconf_live(&v->conf))
			all[k++] = v;
	qsort(all, (size_t)n, sizeof(*all), cmp_vol_name);
	for (int i = 0; i < n && i < max; i++)
		vol_info(all[i], &out[i]);
	free(all);
	return n;
}
