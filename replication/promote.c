/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: promote. tdo_vtier_promote makes a node the primary of a
 * volume: on this node directly, on another by asking it (PROMOTE,
 * answered with PROMOTE_REP, or failed after 10 s or when the
 * connection drops). The node to be promoted proposes the change itself
 * (CH_PROMOTE, config.c): a new epoch, every other replica out of date
 * (each resyncs from it, rolling back writes it lacks), and an entry in
 * the epoch history saying where the new epoch starts.
 *
 * Why the promoted node proposes: only it knows its own copy's newest
 * LSN and whether a resync into it has ended, and acceptors check that
 * it is in-sync in their own configuration.
 *
 * Must never: promote a node that is not an in-sync replica, or one with
 * a resync into its copy still running; answer a request twice.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A promote request: the operator's for this node (peer -1) or for
 * another (peer is that node's, on vt->promotes until answered), or a
 * peer's for this node (peer is the asker's, answered with from_id). */
struct promote {
	struct tdo_vtier *vt;
	uint64_t id;
	int peer;                   /* -1: this node promotes itself */
	uint64_t from_id;           /* asked by a peer: answer it */
	char name[TDO_NAME_MAX + 1];
	tdo_vt_promote_cb cb;
	void *arg;
	uint64_t deadline_usec;
	struct tdo_list link;
};

/* The operator's promote of another node, on vt->promotes, ends. */
static void answer(struct promote *pm, int status, const char *msg, uint32_t epoch)
{
	tdo_list_del(&pm->link);
	pm->cb(pm->arg, status, msg, epoch);
	free(pm);
}

static void promote_reply(struct tdo_vtier *vt, int peer, uint64_t id, const char *name, int status,
                          uint32_t epoch, const char *why)
{
	struct tdo_rm_promote m = { .pm_id = id, .pm_status = status, .pm_epoch = epoch };
	snprintf(m.pm_name, sizeof(m.pm_name), "%s", name);
	snprintf(m.pm_why, sizeof(m.pm_why), "%s", why ? why : "");
	vt_send(vt, peer, TDO_RM_PROMOTE_REP, &m, sizeof(m), NULL, 0);
}

static void promote_done(struct vvol *v, int status, const char *why, void *arg)
{
	struct promote *pm = arg;
	char msg[200];
	if (!status)
		snprintf(msg, sizeof(msg), "%s is primary of '%s' at epoch %u", v->vt->me, v->conf.vc_name, v->conf.vc_epoch);
	else
		snprintf(msg, sizeof(msg), "%s", why ? why : tdo_strerror(status));
	if (pm->peer >= 0)
		promote_reply(v->vt, pm->peer, pm->from_id, v->conf.vc_name, status, v->conf.vc_epoch, msg);
	else
		pm->cb(pm->arg, status, msg, v->conf.vc_epoch);
	free(pm);
}

/* Promote this node; PM says whom to answer. */
static int promote_self(struct tdo_vtier *vt, struct vvol *v, struct promote *pm, char *err, size_t errlen)
{
	int me = vconf_rep_index(&v->conf, vt->me);
	if (me < 0) {
		snprintf(err, errlen, "node '%s' holds no copy of '%s'", vt->me, v->conf.vc_name);
		return -EINVAL;
	}
	if (v->primary) {
		snprintf(err, errlen, "node '%s' is already the primary of '%s'", vt->me, v->conf.vc_name);
		return -EALREADY;
	}
	if (v->conf.vc_state[me] != TDO_REP_IN_SYNC || v->rs_active) {
		snprintf(err, errlen, "node '%s' is %s for '%s': only an in-sync replica can be promoted", vt->me,
		         v->rs_active ? "catching up" : vconf_state_name(v->conf.vc_state[me]), v->conf.vc_name);
		return -EINVAL;
	}
	struct change *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return -ENOMEM;
	*ch = (struct change){ .kind = CH_PROMOTE, .done = promote_done, .arg = pm };
	cfg_queue_change(v, ch);
	return 0;
}

void pm_on_promote(struct tdo_vtier *vt, int peer, const struct tdo_rm_promote *m)
{
	char name[TDO_NAME_MAX + 1], err[160] = "";
	if (!vconf_wire_name(m->pm_name, name))
		return;
	struct vvol *v = vt_find_vol(vt, name);
	int rc = TDO_ENOVOL;
	struct promote *pm = NULL;
	if (v && !v->conf.vc_deleted) {
		pm = calloc(1, sizeof(*pm));
		if (!pm)
			rc = -ENOMEM;
		else {
			*pm = (struct promote){ .vt = vt, .peer = peer, .from_id = m->pm_id };
			rc = promote_self(vt, v, pm, err, sizeof(err));
		}
	} else
		snprintf(err, sizeof(err), "no volume '%s' here", name);
	if (rc) {
		free(pm);
		promote_reply(vt, peer, m->pm_id, name, rc, v ? v->conf.vc_epoch : 0, err);
	}
}

void pm_on_rep(struct tdo_vtier *vt, int peer, const struct tdo_rm_promote *m)
{
	for (struct tdo_list *l = vt->promotes.next; l != &vt->promotes; l = l->next) {
		struct promote *pm = tdo_list_item(l, struct promote, link);
		if (pm->id != m->pm_id || pm->peer != peer)
			continue;
		char why[sizeof(m->pm_why) + 1];
		memcpy(why, m->pm_why, sizeof(m->pm_why));
		why[sizeof(m->pm_why)] = 0;
		answer(pm, m->pm_status, why, m->pm_epoch);
		return;
	}
}

int tdo_vtier_promote(struct tdo_vtier *vt, const char *name, const char *node, tdo_vt_promote_cb cb, void *arg,
                      char *err, size_t errlen)
{
	struct vvol *v = vt_live_vol(vt, name, err, errlen);
	if (!v)
		return TDO_ENOVOL;
	struct promote *pm = calloc(1, sizeof(*pm));
	if (!pm)
		return -ENOMEM;
	*pm = (struct promote){ .vt = vt, .cb = cb, .arg = arg };
	snprintf(pm->name, sizeof(pm->name), "%s", name);
	if (!strcmp(node, vt->me)) {
		pm->peer = -1;
		int rc = promote_self(vt, v, pm, err, errlen);
		if (rc)
			free(pm);
		return rc;
	}
	int peer = tdo_cluster_peer_index(vt->c, node);
	if (peer < 0) {
		snprintf(err, errlen, "no node '%s' in this cluster", node);
		free(pm);
		return -EINVAL;
	}
	pm->peer = peer;
	pm->id = ++vt->next_pm_id;
	pm->deadline_usec = tdo_now_usec() + 10 * 1000000ull;
	struct tdo_rm_promote m = { .pm_id = pm->id };
	snprintf(m.pm_name, sizeof(m.pm_name), "%s", name);
	if (vt_send(vt, peer, TDO_RM_PROMOTE, &m, sizeof(m), NULL, 0)) {
		snprintf(err, errlen, "node '%s' is not reachable", node);
		free(pm);
		return -ENOTCONN;
	}
	tdo_list_add_tail(&vt->promotes, &pm->link);
	return 0;
}

void pm_tick(struct tdo_vtier *vt, uint64_t now)
{
	for (struct tdo_list *l = vt->promotes.next; l != &vt->promotes;) {
		struct promote *pm = tdo_list_item(l, struct promote, link);
		l = l->next;
		if (now > pm->deadline_usec)
			answer(pm, -ETIMEDOUT, "the node did not answer in time", 0);
	}
}

void pm_peer_down(struct tdo_vtier *vt, int peer)
{
	for (struct tdo_list *l = vt->promotes.next; l != &vt->promotes;) {
		struct promote *pm = tdo_list_item(l, struct promote, link);
		l = l->next;
		if (pm->peer == peer)
			answer(pm, -ENOTCONN, "lost the connection to the node", 0);
	}
}

void pm_stop(struct tdo_vtier *vt)
{
	while (!tdo_list_empty(&vt->promotes))
		answer(tdo_list_item(vt->promotes.next, struct promote, link), -ESHUTDOWN, "the node is stopping", 0);
}
