/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: verify. tdo_vtier_verify compares a volume's replicas region
 * by region: every replica (this node included, when it holds one)
 * computes the xxh3 of each region of its copy (SUM, answered by
 * SUM_REP with one checksum per region), and the asking node compares
 * them. Regions are 1 MiB, doubled until there are at most
 * SUM_MAX_REGIONS. A copy's checksums are computed after a flush, one
 * region read at a time, so a large volume costs one region of memory.
 *
 * It is a point-in-time check only where no writes run: a write between
 * two replicas' reads shows as a difference. The answer carries whatever
 * came in; replicas that could not be checked (down, no answer in 10
 * minutes, an error) are named with why, and make the status -EIO.
 *
 * Must never: call the operator's callback inside tdo_vtier_verify or
 * twice; trust a peer's count or length (a SUM_REP whose size is wrong
 * fails that replica with -EPROTO); read past the volume's end.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SUM_MAX_REGIONS 65536      /* regions per verify */

struct sum_job {
	struct tdo_vtier *vt;
	char name[TDO_NAME_MAX + 1];
	uint64_t region, first, count, done;
	uint64_t *sums;
	void *buf;
	bool flushed;               /* the flush before the first read is done */
	int status;
	/* a local computation answers either a peer or the verify job */
	int reply_peer;
	uint64_t reply_id;
	struct verify *ver;         /* NULL once the verify ended without it (orphan) */
	int ver_slot;
	bool orphan;                /* nobody waits: finish by freeing */
};

struct verify {
	struct tdo_vtier *vt;
	char name[TDO_NAME_MAX + 1];
	uint64_t region, count, id;
	int nrep, pending;
	char node[TDO_REP_MAX][TDO_NODE_ID_MAX + 1];
	uint64_t *sums[TDO_REP_MAX];
	int status[TDO_REP_MAX];
	tdo_vt_verify_cb cb;
	void *arg;
	uint64_t deadline_usec;
	struct sum_job *local;      /* this node's own checksum job while it runs */
	struct tdo_list link;
};

static void verify_slot_done(struct verify *ver, int slot, int status, uint64_t *sums);
static void sum_step(struct sum_job *j);

/* The flush before the first read, or a region's read, is done. */
static void sum_io_done(void *arg, int status)
{
	struct sum_job *j = arg;
	struct vvol *v = vt_find_vol(j->vt, j->name);
	if (v)
		v->io_active--;
	if (status) {
		j->status = status;
		j->done = j->count;
	} else if (!j->flushed) {
		j->flushed = true;
	} else {
		uint64_t off = (j->first + j->done) * j->region;
		uint64_t len = v && off + j->region > v->conf.vc_size ? v->conf.vc_size - off : j->region;
		j->sums[j->done++] = tdo_csum(j->buf, len);
	}
	sum_step(j);
}

static void sum_finish(struct sum_job *j)
{
	if (j->orphan) {
		free(j->sums); /* the verify ended (stop, timeout) while this read */
	} else if (j->ver) {
		j->ver->local = NULL;
		verify_slot_done(j->ver, j->ver_slot, j->status, j->status ? NULL : j->sums);
		if (j->status)
			free(j->sums);
	} else {
		struct tdo_rm_sum m = { .sm_id = j->reply_id, .sm_region = j->region, .sm_first = j->first,
		                        .sm_count = j->status ? 0 : j->count, .sm_status = j->status };
		snprintf(m.sm_name, sizeof(m.sm_name), "%s", j->name);
		vt_send(j->vt, j->reply_peer, TDO_RM_SUM_REP, &m, sizeof(m), j->sums,
		        j->status ? 0 : (uint32_t)(j->count * sizeof(uint64_t)));
		free(j->sums);
	}
	free(j->buf);
	free(j);
}

static void sum_step(struct sum_job *j)
{
	struct vvol *v = vt_find_vol(j->vt, j->name);
	if (j->done == j->count || !v || v->local_id < 0) {
		if (j->done < j->count && !j->status)
			j->status = TDO_ENOVOL;
		sum_finish(j);
		return;
	}
	uint64_t off = (j->first + j->done) * j->region;
	uint64_t len = off + j->region > v->conf.vc_size ? v->conf.vc_size - off : j->region;
	v->io_active++;
	int rc = tdo_engine_read(j->vt->e, (uint32_t)v->local_id, off, (uint32_t)len, j->buf, sum_io_done, j);
	if (rc) {
		v->io_active--;
		j->status = rc;
		sum_finish(j);
	}
}

static int sum_start(struct tdo_vtier *vt, const char *name, uint64_t region, uint64_t first, uint64_t count,
                     int reply_peer, uint64_t reply_id, struct verify *ver, int slot)
{
	struct vvol *v = vt_find_vol(vt, name);
	if (!v || v->local_id < 0)
		return TDO_ENOVOL;
	/* the region (a peer's number) is checked before it divides anything */
	if (region == 0 || region > (8u << 20) || region % TDO_SECTOR_SIZE)
		return -EINVAL;
	uint64_t nreg = (v->conf.vc_size + region - 1) / region;
	if (first > nreg || count > nreg - first || count > SUM_MAX_REGIONS)
		return -EINVAL;
	struct sum_job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	*j = (struct sum_job){ .vt = vt, .region = region, .first = first, .count = count, .reply_peer = reply_peer,
	                       .reply_id = reply_id, .ver = ver, .ver_slot = slot };
	snprintf(j->name, sizeof(j->name), "%s", name);
	j->sums = calloc(count ? count : 1, sizeof(uint64_t));
	if (!j->sums || posix_memalign(&j->buf, 4096, region)) {
		free(j->sums);
		free(j);
		return -ENOMEM;
	}
	/* the first read starts from the loop, never inside the caller */
	v->io_active++;
	int rc = tdo_engine_flush(vt->e, sum_io_done, j);
	if (rc) {
		v->io_active--;
		free(j->sums);
		free(j->buf);
		free(j);
	} else if (ver)
		ver->local = j;
	return rc;
}

void ver_on_sum(struct tdo_vtier *vt, int peer, const struct tdo_rm_sum *m)
{
	char name[TDO_NAME_MAX + 1];
	if (!vconf_wire_name(m->sm_name, name))
		return;
	int rc = sum_start(vt, name, m->sm_region, m->sm_first, m->sm_count, peer, m->sm_id, NULL, 0);
	if (rc) {
		struct tdo_rm_sum r = *m;
		r.sm_count = 0;
		r.sm_status = rc;
		vt_send(vt, peer, TDO_RM_SUM_REP, &r, sizeof(r), NULL, 0);
	}
}

static void verify_finish(struct verify *ver)
{
	tdo_list_del(&ver->link);
	if (ver->local) {
		/* its read is still in the engine: it finishes on its own */
		ver->local->ver = NULL;
		ver->local->orphan = true;
		ver->local = NULL;
	}
	struct tdo_verify_result *res = calloc(1, sizeof(*res));
	int ok = 0, bad = 0, ref = -1;
	for (int i = 0; i < ver->nrep; i++) {
		if (ver->status[i])
			bad++;
		else if (ok++ == 0)
			ref = i;
	}
	if (res) {
		snprintf(res->name, sizeof(res->name), "%s", ver->name);
		res->region_bytes = ver->region;
		res->regions = ver->count;
		res->nrep = ver->nrep;
		for (int i = 0; i < ver->nrep; i++) {
			snprintf(res->node[i], sizeof(res->node[i]), "%s", ver->node[i]);
			res->status[i] = ver->status[i];
		}
		for (uint64_t r = 0; ref >= 0 && r < ver->count; r++) {
			bool same = true;
			for (int i = 0; i < ver->nrep; i++)
				if (!ver->status[i] && ver->sums[i][r] != ver->sums[ref][r])
					same = false;
			if (same)
				continue;
			if (res->ndiffs < TDO_VERIFY_MAX_DIFFS) {
				struct tdo_verify_diff *d = &res->diffs[res->ndiffs++];
				d->offset = r * ver->region;
				d->length = ver->region;
				for (int i = 0; i < ver->nrep; i++)
					if (!ver->status[i])
						d->sum[i] = ver->sums[i][r];
			}
			res->differing++;
		}
		res->identical = res->differing == 0 && bad == 0 && ok >= 2;
	}
	int st = 0;
	char msg[200] = "";
	if (!res) {
		st = -ENOMEM;
		snprintf(msg, sizeof(msg), "out of memory");
	} else if (bad) {
		st = -EIO;
		snprintf(msg, sizeof(msg), "%d of %d replicas could not be checked", bad, ver->nrep);
	}
	ver->cb(ver->arg, st, msg[0] ? msg : NULL, res);
	free(res);
	for (int i = 0; i < ver->nrep; i++)
		free(ver->sums[i]);
	free(ver);
}

static void verify_slot_done(struct verify *ver, int slot, int status, uint64_t *sums)
{
	if (ver->sums[slot] || ver->status[slot])
		return;
	ver->status[slot] = status;
	ver->sums[slot] = sums;
	if (--ver->pending == 0)
		verify_finish(ver);
}

void ver_on_sum_rep(struct tdo_vtier *vt, int peer, const struct tdo_rm_sum *m, const void *data, uint32_t dlen)
{
	for (struct tdo_list *l = vt->sums.next; l != &vt->sums; l = l->next) {
		struct verify *ver = tdo_list_item(l, struct verify, link);
		if (ver->id != m->sm_id)
			continue;
		for (int i = 0; i < ver->nrep; i++) {
			if (strcmp(ver->node[i], tdo_cluster_peer_id(vt->c, peer)))
				continue;
			if (m->sm_status || m->sm_count != ver->count || dlen != ver->count * sizeof(uint64_t)) {
				verify_slot_done(ver, i, m->sm_status ? m->sm_status : -EPROTO, NULL);
				return;
			}
			uint64_t *sums = malloc(dlen ? dlen : 1);
			if (!sums) {
				verify_slot_done(ver, i, -ENOMEM, NULL);
				return;
			}
			memcpy(sums, data, dlen);
			verify_slot_done(ver, i, 0, sums);
			return;
		}
		return;
	}
}

int tdo_vtier_verify(struct tdo_vtier *vt, const char *name, tdo_vt_verify_cb cb, void *arg, char *err,
                     size_t errlen)
{
	struct vvol *v = vt_live_vol(vt, name, err, errlen);
	if (!v)
		return TDO_ENOVOL;
	uint64_t region = 1u << 20;
	while ((v->conf.vc_size + region - 1) / region > SUM_MAX_REGIONS)
		region *= 2;
	struct verify *ver = calloc(1, sizeof(*ver));
	if (!ver)
		return -ENOMEM;
	*ver = (struct verify){ .vt = vt, .region = region, .count = (v->conf.vc_size + region - 1) / region,
	                        .id = ++vt->next_sum_id, .cb = cb, .arg = arg, .nrep = (int)v->conf.vc_nrep,
	                        .pending = (int)v->conf.vc_nrep, .deadline_usec = tdo_now_usec() + 600 * 1000000ull };
	snprintf(ver->name, sizeof(ver->name), "%s", name);
	tdo_list_add_tail(&vt->sums, &ver->link);
	for (int i = 0; i < ver->nrep; i++)
		snprintf(ver->node[i], sizeof(ver->node[i]), "%s", v->conf.vc_rep[i]);
	for (int i = 0; i < ver->nrep; i++) {
		int peer = vt_rep_peer(v, i);
		if (peer < 0 && !strcmp(ver->node[i], vt->me)) {
			int rc = sum_start(vt, name, ver->region, 0, ver->count, -1, 0, ver, i);
			if (rc)
				ver->status[i] = rc, ver->pending--;
			continue;
		}
		struct tdo_rm_sum m = { .sm_id = ver->id, .sm_region = ver->region, .sm_first = 0, .sm_count = ver->count };
		snprintf(m.sm_name, sizeof(m.sm_name), "%s", name);
		if (vt_send(vt, peer, TDO_RM_SUM, &m, sizeof(m), NULL, 0))
			ver->status[i] = -ENOTCONN, ver->pending--;
	}
	if (ver->pending == 0) {
		/* nothing went out: answer from the loop, not inside this call */
		ver->deadline_usec = 0;
	}
	return 0;
}

void ver_tick(struct tdo_vtier *vt, uint64_t now)
{
	for (struct tdo_list *l = vt->sums.next; l != &vt->sums;) {
		struct verify *ver = tdo_list_item(l, struct verify, link);
		l = l->next;
		if (ver->pending == 0)
			verify_finish(ver);
		else if (now > ver->deadline_usec)
			for (int i = 0; i < ver->nrep; i++)
				if (!ver->sums[i] && !ver->status[i] && ver->pending)
					verify_slot_done(ver, i, -ETIMEDOUT, NULL);
	}
}

void ver_peer_down(struct tdo_vtier *vt, const char *id)
{
	for (struct tdo_list *l = vt->sums.next; l != &vt->sums;) {
		struct verify *ver = tdo_list_item(l, struct verify, link);
		l = l->next;
		for (int i = 0; i < ver->nrep; i++)
			if (!strcmp(ver->node[i], id) && !ver->sums[i] && !ver->status[i])
				ver->status[i] = -ENOTCONN, ver->pending--;
	}
}

void ver_stop(struct tdo_vtier *vt)
{
	while (!tdo_list_empty(&vt->sums)) {
		struct verify *ver = tdo_list_item(vt->sums.next, struct verify, link);
		for (int i = 0; i < ver->nrep; i++)
			if (!ver->sums[i] && !ver->status[i])
				ver->status[i] = -ESHUTDOWN;
		ver->pending = 0;
		verify_finish(ver);
	}
}
