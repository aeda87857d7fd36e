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
 * A primary whose engine failed hands the role off the same way
 * (pm_hand_off): it asks an in-sync replica that is up to promote itself,
 * holding new writes meanwhile; the promoted node's configuration makes
 * it step down, which forwards them there. If the ask fails, or no
 * configuration naming a new primary came 5 s after it succeeded, the
 * held writes fail (-EIO) and it asks again a second later; with no
 * in-sync replica up, writes fail at once: nothing acknowledged is lost,
 * and an operator (or a replica coming back in-sync) decides.
 *
 * Why this way: the configuration protocol only lets a node promote
 * itself (it alone knows its newest LSN and whether a resync into it
 * ended); a failed primary cannot take itself out of the in-sync set and
 * keep the role, since no replica may be ahead of the primary.
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

#define HANDOFF_RETRY_USEC 1000000ull   /* between asks */
#define HANDOFF_WAIT_USEC  5000000ull   /* from a promote's success to the step-down */

/* The hand-off's ask ended (or is given up): the gate opens, and the
 * writes it held fail (a failed copy admits none). */
static void handoff_release(struct vvol *v)
{
	v->handing_off = false;
	v->gate--;
	v->handoff_usec = tdo_now_usec() + HANDOFF_RETRY_USEC;
	if (!v->gate)
		vt_fail_list(&v->held, -EIO);
}

static void handoff_done(void *arg, int status, const char *msg, uint32_t epoch)
{
	struct vvol *v = arg;
	(void)epoch;
	if (!v->handing_off)
		return; /* this node stepped down meanwhile: the held writes went to the new primary */
	if (status) {
		tdo_log(TDO_LOG_WARN, "vtier", "%s: handing the primary role off failed: %s", v->conf.vc_name, msg);
		handoff_release(v);
		return;
	}
	tdo_log(TDO_LOG_INFO, "vtier", "%s: %s", v->conf.vc_name, msg);
	v->handoff_usec = tdo_now_usec() + HANDOFF_WAIT_USEC; /* the configuration is on its way */
}

void pm_hand_off(struct vvol *v)
{
	struct tdo_vtier *vt = v->vt;
	uint64_t now = tdo_now_usec();
	if (!v->primary || !v->failed || vt->stopping || now < v->handoff_usec)
		return;
	if (v->handing_off) {
		if (!tdo_list_empty(&vt->promotes))
			for (struct tdo_list *l = vt->promotes.next; l != &vt->promotes; l = l->next)
				if (tdo_list_item(l, struct promote, link)->arg == v)
					return; /* still asked: its answer or its timeout comes */
		tdo_log(TDO_LOG_WARN, "vtier", "%s: promoted, but no configuration naming the new primary came here",
		        v->conf.vc_name);
		handoff_release(v);
		return;
	}
	for (uint32_t i = 0; i < v->conf.vc_nrep; i++) {
		int peer = vt_rep_peer(v, (int)i);
		if ((int)i == v->my_rep || v->conf.vc_state[i] != TDO_REP_IN_SYNC || (v->marking & (1u << i)) ||
		    peer < 0 || !tdo_cluster_peer_up(vt->c, peer))
			continue;
		char err[160];
		if (tdo_vtier_promote(vt, v->conf.vc_name, v->conf.vc_rep[i], handoff_done, v, err, sizeof(err))) {
			tdo_log(TDO_LOG_WARN, "vtier", "%s: cannot ask %s to take the primary role: %s", v->conf.vc_name,
			        v->conf.vc_rep[i], err);
			continue;
		}
		tdo_log(TDO_LOG_WARN, "vtier", "%s: asking %s to take the primary role", v->conf.vc_name, v->conf.vc_rep[i]);
		v->handing_off = true;
		v->gate++;
		v->handoff_usec = 0;
		return;
	}
	if (!v->handoff_usec)
		tdo_log(TDO_LOG_ERROR, "vtier", "%s: no in-sync replica is up to take the primary role: writes fail",
		        v->conf.vc_name);
	v->handoff_usec = now + HANDOFF_RETRY_USEC;
}
