/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: configurations from peers. A VCONF is either a proposal (a
 * peer wants a change; answered with VCONF_ACK) or a sync (what the peer
 * holds in force, sent after every handshake and to a node that spoke
 * with an older epoch; not answered). A configuration is taken only when
 * newer by (epoch, version) than the one this node's state file holds or
 * will hold, and a proposal that changes the primary only when the new
 * primary is in-sync here. It is stored (staged: the state file holds it
 * before it is in force here) and only then taken and acknowledged, so an
 * acknowledgement always means "durable on this node". The answers to
 * this node's own proposals count towards its majority (config.c); a
 * refusal carries the refuser's configuration, which is taken when newer.
 *
 * This is the part issue 17 replaces with etcd, with config.c.
 *
 * Must never: acknowledge a configuration before it is durable here;
 * take one that is not newer; accept as a proposal a new primary that is
 * not in-sync in this node's own configuration; act on an invalid
 * configuration (the connection is dropped instead).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void vconf_ack(struct tdo_vtier *vt, int peer, const struct tdo_rm_vconf *c, bool ok, const char *why,
                      const struct tdo_rm_vconf *mine)
{
	struct tdo_rm_vconf_ack a = { .va_epoch = c->vc_epoch, .va_ok = ok, .va_version = c->vc_version };
	memcpy(a.va_name, c->vc_name, sizeof(a.va_name));
	snprintf(a.va_why, sizeof(a.va_why), "%s", why ? why : "");
	vt_send(vt, peer, TDO_RM_VCONF_ACK, &a, sizeof(a), mine, mine ? sizeof(*mine) : 0);
}

/* Would this node take C? NULL, or why not. */
static const char *vconf_refusal(struct tdo_vtier *vt, struct vvol *v, const struct tdo_rm_vconf *c)
{
	(void)vt;
	if (!v)
		return NULL;
	const struct tdo_rm_vconf *cur = st_conf_want(v);
	if (!vconf_newer(c, cur))
		return "not newer than this node's configuration";
	/* a proposal that changes the primary needs it in-sync here; a sync
	 * (what another node holds in force) is taken when newer: this node's
	 * own copy may hold a change that never came into force */
	if (!c->vc_sync && !c->vc_deleted && !cur->vc_deleted && cur->vc_version &&
	    strcmp(c->vc_rep[c->vc_primary], cur->vc_rep[cur->vc_primary])) {
		int i = vconf_rep_index(cur, c->vc_rep[c->vc_primary]);
		if (i < 0 || cur->vc_state[i] != TDO_REP_IN_SYNC)
			return "the new primary is not in-sync here";
	}
	return NULL;
}

struct vconf_store {
	struct vvol *v;
	int peer;
	struct tdo_rm_vconf c;      /* as received (vc_sync: no answer wanted) */
};

/* A peer's configuration is stored here (or not): take it, and answer. */
static void vconf_stored(struct tdo_vtier *vt, int status, void *arg)
{
	struct vconf_store *x = arg;
	struct vvol *v = x->v;
	struct tdo_rm_vconf c = x->c;
	int peer = x->peer;
	free(x);
	if (vt->stopping)
		return;
	bool sync = c.vc_sync;
	c.vc_sync = 0;
	st_unstage(v, &c);
	if (status) {
		if (!sync)
			vconf_ack(vt, peer, &c, false, "cannot store the state file", NULL);
		if (!v->prop)
			cfg_propose_next(v);
		return;
	}
	if (vconf_newer(&c, &v->conf))
		cfg_adopt(v, &c, true);
	if (!sync && v->creating) {
		v->ack_peer = peer; /* answered once the copy exists */
		v->ack_conf = c;
	} else if (!sync)
		vconf_ack(vt, peer, &c, true, NULL, NULL);
	if (v->prop)
		cfg_prop_check(v);
	else
		cfg_propose_next(v); /* changes held while this was stored */
	fwd_retry(vt);
}

void cfgp_on_vconf(struct tdo_vtier *vt, int peer, const struct tdo_rm_vconf *in)
{
	struct tdo_rm_vconf c = *in;
	if (!vconf_valid(&c)) {
		tdo_cluster_drop(vt->c, peer, "an invalid volume configuration");
		return;
	}
	char name[TDO_NAME_MAX + 1];
	vconf_wire_name(c.vc_name, name);
	struct vvol *v = vt_find_vol(vt, name);
	const char *why = vconf_refusal(vt, v, &c);
	if (why) {
		if (!c.vc_sync)
			vconf_ack(vt, peer, &c, false, why, st_conf_want(v));
		else if (vconf_newer(st_conf_want(v), &c))
			cfg_send(vt, peer, st_conf_want(v), true); /* ours is newer: have it */
		return;
	}
	if (!v) {
		struct tdo_rm_vconf none = { .vc_deleted = 1 }; /* an empty tombstone until stored */
		snprintf(none.vc_name, sizeof(none.vc_name), "%s", name);
		v = vt_vol_new(vt, &none);
	}
	struct vconf_store *x = v ? calloc(1, sizeof(*x)) : NULL;
	if (!x) {
		if (!c.vc_sync)
			vconf_ack(vt, peer, &c, false, "out of memory", NULL);
		return;
	}
	x->v = v;
	x->peer = peer;
	x->c = c;
	if (v->prop)
		v->prop->newer_seen = true; /* a newer configuration ends our own proposal */
	if (st_stage_store(v, &c, vconf_stored, x)) {
		free(x);
		if (!c.vc_sync)
			vconf_ack(vt, peer, &c, false, "out of memory", NULL);
	}
}

void cfgp_on_vconf_ack(struct tdo_vtier *vt, int peer, const struct tdo_rm_vconf_ack *in, const void *tail,
                       uint32_t tlen)
{
	struct tdo_rm_vconf_ack a = *in;
	char name[TDO_NAME_MAX + 1];
	if (!vconf_wire_name(a.va_name, name))
		return;
	struct vvol *v = vt_find_vol(vt, name);
	if (!v || !v->prop || v->prop->conf.vc_epoch != a.va_epoch || v->prop->conf.vc_version != a.va_version)
		return;
	struct proposal *p = v->prop;
	uint32_t bit = 1u << peer;
	if ((p->acked | p->nacked) & bit)
		return;
	if (a.va_ok) {
		p->acked |= bit;
		p->have++;
	} else {
		p->nacked |= bit;
		a.va_why[sizeof(a.va_why) - 1] = 0;
		tdo_log(TDO_LOG_WARN, "vtier", "%s: %s refused version %" PRIu64 ": %s", name,
		        tdo_cluster_peer_id(vt->c, peer), a.va_version, a.va_why);
		if (tlen == sizeof(struct tdo_rm_vconf)) {
			struct tdo_rm_vconf theirs;
			memcpy(&theirs, tail, sizeof(theirs));
			if (vconf_valid(&theirs) && vconf_newer(&theirs, &p->prev) &&
			    (theirs.vc_epoch > p->conf.vc_epoch ||
			     (theirs.vc_epoch == p->conf.vc_epoch && theirs.vc_version >= p->conf.vc_version)))
				p->newer_seen = true;
		}
	}
	cfg_prop_check(v);
	/* a refusal that showed a newer configuration: take it */
	if (!a.va_ok && tlen == sizeof(struct tdo_rm_vconf)) {
		struct tdo_rm_vconf theirs;
		memcpy(&theirs, tail, sizeof(theirs));
		theirs.vc_sync = 1;
		if (vconf_valid(&theirs))
			cfgp_on_vconf(vt, peer, &theirs);
	}
}
