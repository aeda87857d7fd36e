/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: configurations and their changes on this node: proposing a
 * change to the cluster, following the configuration in force locally
 * (the copy's existence and size, this node's role), and the copy's
 * create, delete and resize in the engine.
 *
 * Every node keeps every volume's configuration in its state file. A
 * change is proposed by one node (the primary marking a replica, a node
 * creating or deleting a volume, a replica being promoted) to all peers,
 * and is in force once a majority of the cluster's nodes stored it: the
 * proposer counts itself and stores the change only then (prop_stored),
 * so a proposer that dies first leaves no trace of a change that may
 * never have come into force. Acceptors (config_peer.c) take only
 * configurations newer by (epoch, version), and a new primary only if it
 * is in-sync in their own copy, so a stale primary cannot get a change
 * accepted once a majority has seen the promote, and a replica that was
 * taken out of the in-sync set cannot be promoted. What each change may
 * do is vconf.c's; one proposal per volume is in flight at a time.
 *
 * This is the part issue 17 replaces with etcd transactions.
 *
 * Must never: let a configuration come into force here (cfg_set) before
 * a majority stored it and this node's state file holds it; end a
 * proposal that is storing except by the end of its store or the stop;
 * delete or resize the copy under I/O in flight.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PROPOSE_MS      2000         /* a proposal without a majority by then failed */

/* Every configuration that comes into force on this node passes here. */
void cfg_set(struct vvol *v, const struct tdo_rm_vconf *c)
{
	struct tdo_vtier *vt = v->vt;
	bool gone = vconf_live(&v->conf) && !vconf_live(c);
	if (vconf_live(&v->conf) != vconf_live(c))
		v->gen++; /* handles of the old incarnation see the volume gone */
	v->conf = *c;
	v->conf.vc_sync = 0;
	/* every node hangs up the volume's clients, whether it holds a copy
	 * or only forwarded their requests */
	if (gone && vt->o.vol_gone)
		vt->o.vol_gone(vt->o.arg, v->conf.vc_name);
}

uint64_t cfg_engine_lsn(struct vvol *v, uint32_t *epoch)
{
	struct tdo_vol_info vi;
	if (tdo_vol_lookup(v->vt->e, v->conf.vc_name, &vi)) {
		if (epoch)
			*epoch = 0;
		return 0;
	}
	if (epoch)
		*epoch = vi.epoch;
	return vi.lsn;
}

/* Recompute this node's role after the configuration changed. */
void cfg_set_role(struct vvol *v)
{
	struct tdo_vtier *vt = v->vt;
	v->my_rep = v->conf.vc_deleted ? -1 : vconf_rep_index(&v->conf, vt->me);
	bool primary = v->my_rep >= 0 && (uint32_t)v->my_rep == v->conf.vc_primary && v->local_id >= 0;
	if (v->primary && !primary) {
		tdo_log(TDO_LOG_WARN, "vtier", "%s: no longer primary (epoch %u, primary %s)", v->conf.vc_name,
		        v->conf.vc_epoch, v->conf.vc_rep[v->conf.vc_primary]);
		for (int i = 0; i < TDO_REP_MAX; i++)
			if (v->rs[i])
				rs_abort(v, i, "this node stepped down");
		v->primary = false;
		wr_step_down(v);
	}
	if (!v->primary && primary) {
		v->primary = true;
		v->next_lsn = cfg_engine_lsn(v, NULL);
		tdo_log(TDO_LOG_INFO, "vtier", "%s: primary at epoch %u, LSN %" PRIu64, v->conf.vc_name,
		        v->conf.vc_epoch, v->next_lsn);
	}
	if (!primary && v->my_rep >= 0 && v->conf.vc_state[v->my_rep] == TDO_REP_IN_SYNC && !v->rs_active &&
	    v->local_id >= 0 && v->expect_lsn == 0)
		v->expect_lsn = cfg_engine_lsn(v, NULL) + 1;
}

void cfg_send(struct tdo_vtier *vt, int peer, const struct tdo_rm_vconf *c, bool sync)
{
	struct tdo_rm_vconf m = *c;
	m.vc_sync = sync;
	vt_send(vt, peer, TDO_RM_VCONF, &m, sizeof(m), NULL, 0);
}

/* Answers that waited for this node's copy to exist. */
static void local_created(struct vvol *v, int status)
{
	if (v->ack_peer >= 0) {
		int peer = v->ack_peer;
		v->ack_peer = -1;
		struct tdo_rm_vconf_ack a = { .va_epoch = v->ack_conf.vc_epoch, .va_ok = status == 0,
		                              .va_version = v->ack_conf.vc_version };
		memcpy(a.va_name, v->ack_conf.vc_name, sizeof(a.va_name));
		if (status)
			snprintf(a.va_why, sizeof(a.va_why), "cannot create the copy: %s", tdo_strerror(status));
		vt_send(v->vt, peer, TDO_RM_VCONF_ACK, &a, sizeof(a), NULL, 0);
	}
	adm_wait_check(v, status);
}

/* The new copy exists, and holds the configuration's epoch (or not). */
static void local_epoch_done(void *arg, int status)
{
	struct vvol *v = arg;
	v->creating = false;
	if (status) {
		tdo_log(TDO_LOG_ERROR, "vtier", "%s: cannot create this node's copy: %s", v->conf.vc_name,
		        tdo_strerror(status));
		local_created(v, status);
		return;
	}
	struct tdo_vol_info vi;
	if (!tdo_vol_lookup(v->vt->e, v->conf.vc_name, &vi))
		v->local_id = vi.id;
	cfg_set_role(v);
	local_created(v, status);
}

static void local_create_done(void *arg, int status)
{
	struct vvol *v = arg;
	struct tdo_vol_info vi;
	/* the engine starts a copy at epoch 1: record the configuration's, so
	 * a node with no state file (a cluster of one) finds it at its next
	 * start and the volume's epoch never goes down */
	if (!status && !tdo_vol_lookup(v->vt->e, v->conf.vc_name, &vi) && vi.epoch < v->conf.vc_epoch &&
	    !tdo_vol_set_lsn(v->vt->e, v->conf.vc_name, vi.lsn, v->conf.vc_epoch, local_epoch_done, v))
		return;
	local_epoch_done(v, status);
}

static void local_simple_done(void *arg, int status)
{
	struct vvol *v = arg;
	v->deleting = v->resizing = false;
	if (status)
		tdo_log(TDO_LOG_WARN, "vtier", "%s: a local change failed: %s (retried)", v->conf.vc_name,
		        tdo_strerror(status));
	adm_wait_check(v, status);
}

/* Bring the local engine in line with the configuration (retried by the tick). */
void cfg_reconcile(struct vvol *v)
{
	struct tdo_vtier *vt = v->vt;
	struct tdo_vol_info vi;
	bool have = !tdo_vol_lookup(vt->e, v->conf.vc_name, &vi);
	bool want = !v->conf.vc_deleted && vconf_rep_index(&v->conf, vt->me) >= 0;
	v->local_id = have ? (int64_t)vi.id : -1;
	int rc = 0;
	if (want && !have && !v->creating) {
		v->creating = true;
		rc = tdo_vol_create(vt->e, v->conf.vc_name, v->conf.vc_size, v->conf.vc_flags, local_create_done, v);
		if (rc) {
			v->creating = false;
			tdo_log(TDO_LOG_ERROR, "vtier", "%s: cannot create this node's copy: %s", v->conf.vc_name,
			        tdo_strerror(rc));
		}
	} else if (!want && have && !v->deleting && v->io_active == 0 && tdo_list_empty(&v->inflight)) {
		if (vt->o.vol_gone)
			vt->o.vol_gone(vt->o.arg, v->conf.vc_name);
		v->deleting = true;
		if ((rc = tdo_vol_delete(vt->e, v->conf.vc_name, local_simple_done, v)))
			v->deleting = false;
		else
			v->local_id = -1;
	} else if (want && have && vi.size != v->conf.vc_size && !v->resizing && v->io_active == 0 &&
	           tdo_list_empty(&v->inflight)) {
		v->resizing = true;
		if ((rc = tdo_vol_resize(vt->e, v->conf.vc_name, v->conf.vc_size, local_simple_done, v)))
			v->resizing = false;
	}
	v->local_err = rc; /* the tick tries again; an operator waiting hears of it */
	cfg_set_role(v);
	adm_wait_check(v, rc);
}

/* Take configuration C (newer than ours, checked by the caller). */
void cfg_adopt(struct vvol *v, const struct tdo_rm_vconf *c, bool from_peer)
{
	(void)from_peer;
	uint32_t old_epoch = v->conf.vc_epoch;
	cfg_set(v, c);
	if (c->vc_epoch != old_epoch && v->my_rep >= 0 && !v->primary)
		v->expect_lsn = 0; /* a new primary: we are out of date until a resync says otherwise */
	cfg_log(v, "configuration");
	cfg_reconcile(v);
	/* what was cleared in the new configuration no longer needs acks */
	if (v->primary)
		wr_complete_ready(v);
}

void cfg_log(struct vvol *v, const char *what)
{
	char reps[256] = "";
	size_t o = 0;
	for (uint32_t i = 0; i < v->conf.vc_nrep && i < TDO_REP_MAX; i++)
		o += (size_t)snprintf(reps + o, sizeof(reps) - o, "%s%s%s=%s", i ? " " : "",
		                      i == v->conf.vc_primary ? "*" : "", v->conf.vc_rep[i],
		                      vconf_state_name(v->conf.vc_state[i]));
	tdo_log(TDO_LOG_INFO, "vtier", "%s %s: epoch %u version %" PRIu64 "%s, %s", v->conf.vc_name, what,
	        v->conf.vc_epoch, v->conf.vc_version, v->conf.vc_deleted ? " (deleted)" : "", reps);
}

void cfg_change_done(struct vvol *v, struct change *ch, int status, const char *why)
{
	if (ch->done)
		ch->done(v, status, why, ch->arg);
	free(ch);
}

void cfg_prop_finish(struct vvol *v, int status, const char *why)
{
	struct proposal *p = v->prop;
	v->prop = NULL;
	cfg_change_done(v, p->ch, status, why);
	free(p);
	cfg_propose_next(v);
}

/* The accepted proposal's configuration is durable here (or not). */
static void prop_stored(struct tdo_vtier *vt, int status, void *arg)
{
	struct vvol *v = arg;
	struct proposal *p = v->prop;
	if (vt->stopping || !p || !p->storing)
		return; /* the stop answered it already */
	p->storing = false;
	st_unstage(v, &p->conf);
	if (status) {
		cfg_prop_finish(v, -EIO, "cannot store the state file");
		return;
	}
	if (!vconf_newer(&p->conf, &v->conf)) {
		/* a peer's newer configuration came into force meanwhile */
		cfg_prop_finish(v, -EAGAIN, "another node holds a newer configuration");
		return;
	}
	/* in force: now, and only now, it is this node's configuration (a
	 * proposer that dies before this point leaves no trace of a change
	 * that may never have come into force) */
	cfg_set(v, &p->conf);
	cfg_log(v, "change in force");
	cfg_reconcile(v);
	cfg_prop_finish(v, 0, NULL);
	if (v->primary)
		wr_complete_ready(v);
}

void cfg_prop_check(struct vvol *v)
{
	struct proposal *p = v->prop;
	if (!p || p->storing)
		return;
	if (p->have >= p->need && !p->newer_seen) {
		p->storing = true;
		if (st_stage_store(v, &p->conf, prop_stored, v)) {
			p->storing = false;
			cfg_prop_finish(v, -ENOMEM, "out of memory");
		}
		return;
	}
	int undecided = v->vt->nnodes - p->have - __builtin_popcount(p->nacked);
	if (p->have + undecided < p->need || p->newer_seen)
		cfg_prop_finish(v, -EAGAIN, p->newer_seen ? "another node holds a newer configuration"
		                                      : "a majority of the nodes refused the change");
}

/* The configuration CH would make from conf; false with WHY when it cannot. */
static bool make_change(struct vvol *v, struct change *ch, struct tdo_rm_vconf *out, char *why, size_t wl)
{
	struct vconf_self self = { .node = v->vt->me, .primary = v->primary, .rs_active = v->rs_active,
	                           .lsn = ch->kind == CH_PROMOTE ? cfg_engine_lsn(v, NULL) : 0 };
	return vconf_change(&v->conf, ch, &self, out, why, wl);
}

void cfg_propose_next(struct vvol *v)
{
	struct tdo_vtier *vt = v->vt;
	/* a change is made from the configuration in force, so none starts
	 * while a peer's newer one is being stored (its store calls again) */
	while (!v->prop && !v->staged && !tdo_list_empty(&v->changes) && !vt->stopping) {
		struct change *ch = tdo_list_item(v->changes.next, struct change, link);
		tdo_list_del(&ch->link);
		struct tdo_rm_vconf c;
		char why[160];
		if (!make_change(v, ch, &c, why, sizeof(why))) {
			cfg_change_done(v, ch, -EINVAL, why);
			continue;
		}
		if (c.vc_version == v->conf.vc_version && c.vc_epoch == v->conf.vc_epoch) {
			cfg_change_done(v, ch, 0, NULL);
			continue;
		}
		struct proposal *p = calloc(1, sizeof(*p));
		if (!p) {
			cfg_change_done(v, ch, -ENOMEM, "out of memory");
			continue;
		}
		p->ch = ch;
		p->conf = c;
		p->conf.vc_sync = 0;
		p->prev = v->conf;
		p->need = vt->nnodes / 2 + 1;
		p->deadline_usec = tdo_now_usec() + PROPOSE_MS * 1000ull;
		v->prop = p;
		p->have = 1; /* this node: it stores the change once it is in force */
		for (int i = 0; i < tdo_cluster_npeers(vt->c); i++)
			if (tdo_cluster_peer_up(vt->c, i))
				cfg_send(vt, i, &c, false);
			else
				p->nacked |= 1u << i;
		cfg_prop_check(v);
	}
}

void cfg_queue_change(struct vvol *v, struct change *ch)
{
	tdo_list_add_tail(&v->changes, &ch->link);
	cfg_propose_next(v);
}

/* Propose replica REP in STATE; DONE gets REP as its argument. False when
 * out of memory (nothing queued). */
bool cfg_queue_state(struct vvol *v, int rep, uint32_t state,
                     void (*done)(struct vvol *v, int status, const char *why, void *arg))
{
	struct change *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return false;
	*ch = (struct change){ .kind = CH_STATE, .rep = rep, .state = state, .done = done, .arg = (void *)(intptr_t)rep };
	cfg_queue_change(v, ch);
	return true;
}
