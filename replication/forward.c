/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: forwarding. Any node serves any volume: a client's request on
 * a node that is not the volume's primary is sent to the primary (FWD)
 * and its reply (FWD_REP) relayed back. A request waits on fwd_wait, up
 * to FWD_WAIT_MS from when it came in, whenever no primary is reachable:
 * none is known, its connection is down, it answered -EREMCHG (not the
 * primary any more), or it went down with the request unanswered. Each
 * new configuration, peer coming up and tick tries the waiting ones
 * again, so an attached client sees a pause across a failover, not an
 * error. A write sent twice this way is harmless: it is idempotent.
 *
 * The primary's side (fwd_on_req) runs the request as its own client's
 * would, and answers from the callback.
 *
 * Must never: answer a forwarded request twice or not at all (the stop
 * fails what is left); serve a forwarded request on a node that is not
 * the primary (it says -EREMCHG instead); trust a reply's length.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int primary_peer(struct tdo_vtier *vt, struct vvol *v)
{
	if (!v || v->conf.vc_deleted)
		return -1;
	return tdo_cluster_peer_index(vt->c, v->conf.vc_rep[v->conf.vc_primary]);
}

void fwd_send(struct tdo_vtier *vt, struct vreq *r)
{
	struct vvol *v = r->v; /* a volume keeps its vvol, and its name, for the tier's life */
	if (v->conf.vc_deleted) {
		vt_req_finish(r, TDO_ENOVOL);
		return;
	}
	if (v->primary) {
		int rc = wr_primary_io(v, r);
		if (rc)
			vt_req_finish(r, rc);
		return;
	}
	int peer = primary_peer(vt, v);
	if (peer >= 0 && tdo_cluster_peer_up(vt->c, peer)) {
		struct tdo_rm_io io = { .io_epoch = v->conf.vc_epoch, .io_op = (uint16_t)r->op,
		                        .io_flags = (uint16_t)r->flags, .io_id = ++vt->next_fwd_id,
		                        .io_off = r->off, .io_len = r->len };
		snprintf(io.io_name, sizeof(io.io_name), "%s", v->conf.vc_name);
		if (!vt_send(vt, peer, TDO_RM_FWD, &io, sizeof(io), r->op == TDO_RMOP_WRITE ? r->buf : NULL,
		             r->op == TDO_RMOP_WRITE ? (uint32_t)r->len : 0)) {
			r->fwd_id = io.io_id;
			r->fwd_peer = peer;
			tdo_list_add_tail(&vt->fwd_sent, &r->link);
			return;
		}
	}
	r->fwd_peer = -1;
	tdo_list_add_tail(&vt->fwd_wait, &r->link);
}

/* Called when the configuration changed, a peer came up, and at each tick. */
void fwd_retry(struct tdo_vtier *vt)
{
	struct tdo_list l;
	tdo_list_init(&l);
	uint64_t now = tdo_now_usec();
	tdo_list_move(&l, &vt->fwd_wait);
	while (!tdo_list_empty(&l)) {
		struct vreq *r = tdo_list_item(l.next, struct vreq, link);
		tdo_list_del(&r->link);
		if (now > r->deadline_usec || vt->stopping)
			vt_req_finish(r, -EIO);
		else
			fwd_send(vt, r);
	}
}

/* The primary's side: a peer's client request. */
static void fwd_in_done(void *arg, int status)
{
	struct vreq *r = arg;
	struct tdo_rm_ack a = { .ak_status = status, .ak_id = r->from_id };
	snprintf(a.ak_name, sizeof(a.ak_name), "%s", r->v->conf.vc_name);
	a.ak_epoch = r->v->conf.vc_epoch;
	bool data = r->op == TDO_RMOP_READ && status == 0;
	a.ak_len = data ? r->len : 0;
	vt_send(r->vt, r->from_peer, TDO_RM_FWD_REP, &a, sizeof(a), data ? r->buf : NULL, data ? (uint32_t)r->len : 0);
}

void fwd_on_req(struct tdo_vtier *vt, int peer, const struct tdo_rm_io *io, const void *data, uint32_t dlen)
{
	char name[TDO_NAME_MAX + 1];
	struct tdo_rm_ack a = { .ak_id = io->io_id };
	memcpy(a.ak_name, io->io_name, sizeof(a.ak_name));
	if (!vconf_wire_name(io->io_name, name)) {
		tdo_cluster_drop(vt->c, peer, "forwarded request with a bad volume name");
		return;
	}
	struct vvol *v = vt_find_vol(vt, name);
	int err = 0;
	if (!v || v->conf.vc_deleted)
		err = TDO_ENOVOL;
	else if (!v->primary)
		err = -EREMCHG; /* not (or no longer) the primary: ask again */
	else if (io->io_op == TDO_RMOP_WRITE ? dlen != io->io_len : dlen != 0)
		err = -EINVAL;
	else if (io->io_op == TDO_RMOP_READ && (io->io_len > TDO_RM_MAX_PAYLOAD - 4096 || io->io_len == 0))
		err = -EINVAL;
	if (!err) {
		struct vreq *r = calloc(1, sizeof(*r));
		if (!r)
			err = -ENOMEM;
		else {
			*r = (struct vreq){ .vt = vt, .v = v, .op = io->io_op, .flags = io->io_flags, .off = io->io_off,
			                    .len = io->io_len, .from_peer = peer, .from_id = io->io_id, .cb = fwd_in_done,
			                    .arg = r };
			if (io->io_op == TDO_RMOP_WRITE || io->io_op == TDO_RMOP_READ) {
				if (posix_memalign(&r->buf, 4096, io->io_len ? io->io_len : 4096)) {
					free(r);
					err = -ENOMEM;
					goto answer;
				}
				r->own_buf = true;
				if (dlen)
					memcpy(r->buf, data, dlen);
			}
			err = wr_primary_io(v, r);
			if (err) {
				if (r->own_buf)
					free(r->buf);
				free(r);
			} else
				return;
		}
	}
answer:
	a.ak_status = err;
	a.ak_epoch = v ? v->conf.vc_epoch : 0;
	vt_send(vt, peer, TDO_RM_FWD_REP, &a, sizeof(a), NULL, 0);
}

void fwd_on_rep(struct tdo_vtier *vt, int peer, const struct tdo_rm_ack *a, const void *data, uint32_t dlen)
{
	for (struct tdo_list *l = vt->fwd_sent.next; l != &vt->fwd_sent; l = l->next) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		if (r->fwd_id != a->ak_id || r->fwd_peer != peer)
			continue;
		tdo_list_del(&r->link);
		if (a->ak_status == -EREMCHG) {
			/* that node is not the primary (any more): wait for a configuration that says who is */
			r->fwd_peer = -1;
			tdo_list_add_tail(&vt->fwd_wait, &r->link);
			return;
		}
		int st = a->ak_status;
		if (!st && r->op == TDO_RMOP_READ) {
			if (dlen != r->len)
				st = -EIO;
			else
				memcpy(r->buf, data, dlen);
		}
		vt_req_finish(r, st);
		return;
	}
}

void fwd_peer_down(struct tdo_vtier *vt, int peer)
{
	for (struct tdo_list *l = vt->fwd_sent.next; l != &vt->fwd_sent;) {
		struct vreq *r = tdo_list_item(l, struct vreq, link);
		l = l->next;
		if (r->fwd_peer == peer) {
			/* sent to a primary that is gone: send again to whoever is primary (a write is idempotent) */
			tdo_list_del(&r->link);
			r->fwd_peer = -1;
			tdo_list_add_tail(&vt->fwd_wait, &r->link);
		}
	}
}

void fwd_stop(struct tdo_vtier *vt)
{
	vt_fail_list(&vt->fwd_wait, -ESHUTDOWN);
	vt_fail_list(&vt->fwd_sent, -ESHUTDOWN);
}
