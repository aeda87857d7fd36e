/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the operator's create, delete and resize (tdo_vtier_create,
 * _delete, _resize), and the wait that answers them.
 *
 * Each call checks what it can here (name, size, replicas, room on this
 * node's device), then queues a change (config.c) like any other. The
 * answer waits for two things: the change in force, and this node's copy
 * following it on its device (created, deleted, resized), so an operator
 * who is told "done" can use the volume through this node at once. A
 * change in force whose local step failed is answered with that error
 * and a message saying the change itself stands.
 *
 * Must never: answer an operator before the change is in force, or
 * twice; keep an answer waiting past the stop.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* This node's copy has not yet followed the configuration in force. */
static bool local_behind(struct vvol *v)
{
	if (v->creating || v->deleting || v->resizing)
		return true;
	struct tdo_vol_info vi;
	bool have = !tdo_vol_lookup(v->vt->e, v->conf.vc_name, &vi);
	bool want = !v->conf.vc_deleted && vconf_rep_index(&v->conf, v->vt->me) >= 0;
	return want != have || (want && vi.size != v->conf.vc_size);
}

/* An operator's change in force waits for this node's copy: answer it
 * once the copy has followed, or could not (STATUS). */
void adm_wait_check(struct vvol *v, int status)
{
	if (!status && v->local_err && local_behind(v))
		status = v->local_err;
	if (!v->admin_cb || (!status && local_behind(v)))
		return;
	tdo_vt_cb cb = v->admin_cb;
	v->admin_cb = NULL;
	char msg[200];
	snprintf(msg, sizeof(msg), "the change is in force, but this node's copy could not follow it: %s",
	         tdo_strerror(status));
	cb(v->admin_arg, status, status ? msg : NULL);
}

/* The stop: an operator still waiting for this node's copy hears of it. */
void adm_stop(struct vvol *v)
{
	if (v->admin_cb) {
		tdo_vt_cb cb = v->admin_cb;
		v->admin_cb = NULL;
		cb(v->admin_arg, -ESHUTDOWN, "the node is stopping");
	}
}

struct admin_op {
	tdo_vt_cb cb;
	void *arg;
};

static void admin_done(struct vvol *v, int status, const char *why, void *arg)
{
	struct admin_op *op = arg;
	if (!status && !v->admin_cb && local_behind(v)) {
		/* in force: answer once this node's copy has followed */
		v->admin_cb = op->cb;
		v->admin_arg = op->arg;
		free(op);
		adm_wait_check(v, 0); /* unless it already could not */
		return;
	}
	op->cb(op->arg, status, why);
	free(op);
}

/* Queue an operator's change of KIND (SIZE for a resize, CONF for a create). */
static int queue_admin(struct vvol *v, int kind, uint64_t size, const struct tdo_rm_vconf *conf, tdo_vt_cb cb,
                       void *arg)
{
	struct change *ch = calloc(1, sizeof(*ch));
	struct admin_op *op = calloc(1, sizeof(*op));
	if (!ch || !op) {
		free(ch);
		free(op);
		return -ENOMEM;
	}
	*op = (struct admin_op){ .cb = cb, .arg = arg };
	*ch = (struct change){ .kind = kind, .size = size, .done = admin_done, .arg = op };
	if (conf)
		ch->conf = *conf;
	cfg_queue_change(v, ch);
	return 0;
}

/* This node's device can take MORE bytes of volumes (whole blocks). */
static bool local_room(struct tdo_vtier *vt, uint64_t more)
{
	struct tdo_engine_stats st;
	tdo_engine_stats(vt->e, &st);
	uint64_t need = (more + TDO_BLOCK_SIZE - 1) / TDO_BLOCK_SIZE * TDO_BLOCK_SIZE;
	return st.vol_bytes + need <= st.capacity;
}

int tdo_vtier_create(struct tdo_vtier *vt, const char *name, uint64_t size, uint32_t flags, int replicas,
                     const char *primary, tdo_vt_cb cb, void *arg, char *err, size_t errlen)
{
	if (!tdo_vol_name_valid(name)) {
		snprintf(err, errlen, "invalid volume name '%s'", name);
		return -EINVAL;
	}
	if (size == 0 || size % TDO_SECTOR_SIZE) {
		snprintf(err, errlen, "size must be a positive multiple of 512 bytes");
		return -EINVAL;
	}
	int maxrep = vt->nnodes < TDO_REP_MAX ? vt->nnodes : TDO_REP_MAX;
	if (replicas == 0)
		replicas = vt->nnodes < 3 ? vt->nnodes : 3;
	if (replicas < 1 || replicas > maxrep) {
		snprintf(err, errlen, "replicas must be 1..%d (the cluster has %d node%s)", maxrep, vt->nnodes,
		         vt->nnodes == 1 ? "" : "s");
		return -EINVAL;
	}
	if (!primary || !*primary)
		primary = vt->me;
	if (strcmp(primary, vt->me) && tdo_cluster_peer_index(vt->c, primary) < 0) {
		snprintf(err, errlen, "no node '%s' in this cluster", primary);
		return -EINVAL;
	}
	struct vvol *v = vt_find_vol(vt, name);
	if (v && !v->conf.vc_deleted && v->conf.vc_version) {
		snprintf(err, errlen, "a volume named '%s' already exists", name);
		return TDO_EVOLEXIST;
	}
	if (v && (v->prop || !tdo_list_empty(&v->changes) || v->local_id >= 0)) {
		snprintf(err, errlen, "volume '%s' is still being deleted", name);
		return -EBUSY;
	}
	struct tdo_rm_vconf c = { .vc_size = size, .vc_flags = flags, .vc_ctime = (uint64_t)time(NULL) };
	snprintf(c.vc_name, sizeof(c.vc_name), "%s", name);
	snprintf(c.vc_rep[c.vc_nrep++], sizeof(c.vc_rep[0]), "%s", primary);
	if (strcmp(primary, vt->me))
		snprintf(c.vc_rep[c.vc_nrep++], sizeof(c.vc_rep[0]), "%s", vt->me);
	for (int i = 0; i < tdo_cluster_npeers(vt->c) && (int)c.vc_nrep < replicas; i++) {
		const char *id = tdo_cluster_peer_id(vt->c, i);
		if (strcmp(id, primary) && tdo_cluster_peer_up(vt->c, i))
			snprintf(c.vc_rep[c.vc_nrep++], sizeof(c.vc_rep[0]), "%s", id);
	}
	if ((int)c.vc_nrep > replicas)
		c.vc_nrep = (uint32_t)replicas; /* this node was not asked to hold a copy */
	if ((int)c.vc_nrep < replicas) {
		snprintf(err, errlen, "%d replicas asked for, but only %u of the %d nodes are reachable", replicas,
		         c.vc_nrep, vt->nnodes);
		return -EAGAIN;
	}
	int pp = tdo_cluster_peer_index(vt->c, primary);
	if (pp >= 0 && !tdo_cluster_peer_up(vt->c, pp)) {
		snprintf(err, errlen, "node '%s' is not reachable", primary);
		return -EAGAIN;
	}
	for (uint32_t i = 0; i < c.vc_nrep; i++)
		c.vc_state[i] = TDO_REP_IN_SYNC;
	if (vconf_rep_index(&c, vt->me) >= 0 && !local_room(vt, size)) {
		snprintf(err, errlen, "this node's device cannot hold %" PRIu64 " more bytes of volumes", size);
		return TDO_ENOSPACE;
	}
	if (!v) {
		struct tdo_rm_vconf none = { .vc_deleted = 1 };
		snprintf(none.vc_name, sizeof(none.vc_name), "%s", name);
		if (!(v = vt_vol_new(vt, &none)))
			return -ENOMEM;
	}
	return queue_admin(v, CH_CREATE, 0, &c, cb, arg);
}

int tdo_vtier_delete(struct tdo_vtier *vt, const char *name, tdo_vt_cb cb, void *arg, char *err, size_t errlen)
{
	struct vvol *v = vt_live_vol(vt, name, err, errlen);
	if (!v)
		return TDO_ENOVOL;
	return queue_admin(v, CH_DELETE, 0, NULL, cb, arg);
}

int tdo_vtier_resize(struct tdo_vtier *vt, const char *name, uint64_t size, tdo_vt_cb cb, void *arg, char *err,
                     size_t errlen)
{
	struct vvol *v = vt_live_vol(vt, name, err, errlen);
	if (!v)
		return TDO_ENOVOL;
	if (size == 0 || size % TDO_SECTOR_SIZE) {
		snprintf(err, errlen, "size must be a positive multiple of 512 bytes");
		return -EINVAL;
	}
	if (size > v->conf.vc_size && vconf_rep_index(&v->conf, vt->me) >= 0 && !local_room(vt, size - v->conf.vc_size)) {
		snprintf(err, errlen, "this node's device cannot hold %" PRIu64 " more bytes of volumes",
		         size - v->conf.vc_size);
		return TDO_ENOSPACE;
	}
	return queue_admin(v, CH_RESIZE, size, NULL, cb, arg);
}
