/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: checkpoints bound recovery. A checkpoint is a snapshot of the
 * volume table, the segments' ages and every non-hole index entry, taken on
 * the loop at a batch boundary (the index then reflects exactly the log up
 * to e->applied_*), and written by a worker into the area that does not hold
 * the newest valid checkpoint (ck_seq parity), then synced.
 *
 * Only when that sync succeeded do segments that were empty at the snapshot
 * become free: before it, the older checkpoint (or its replay path) may
 * still refer to them. (A segment written entirely before the durable
 * checkpoint's replay start is freed as soon as it is empty, without a new
 * checkpoint: see seg_try_free.)
 *
 * Must never: overwrite the area holding the newest valid checkpoint, or
 * free a segment before the checkpoint that forgot it is durable.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct waiter {
	struct tdo_list link;
	tdo_done_cb cb;
	void *arg;
};

struct ckpt_job {
	uv_work_t work;
	struct tdo_engine *e;
	uint8_t *buf;
	size_t len;
	uint64_t off;
	uint64_t seq;
	uint64_t log_seq;           /* the snapshot's replay start */
	int status;
	uint32_t *freeing;          /* segments to free once durable */
	uint32_t nfreeing;
	struct tdo_list waiters;        /* satisfied by this job */
};

uint64_t ckpt_area_size(uint64_t seg_blocks, uint32_t nsegs, uint32_t max_vols)
{
	return round_up(TDO_BLOCK_SIZE + (uint64_t)max_vols * sizeof(struct tdo_vol_desc) +
	                (uint64_t)nsegs * sizeof(struct tdo_ckpt_seg) +
	                seg_blocks * sizeof(struct tdo_ckpt_ent), TDO_BLOCK_SIZE);
}

struct build {
	struct tdo_ckpt_ent *ents;
	uint64_t n, cap;
	uint32_t vol;
};

static int build_ent(void *arg, uint64_t b, struct tdo_ie ie)
{
	struct build *bd = arg;

	if (bd->n == bd->cap)
		return -ENOSPC;
	bd->ents[bd->n].ce_vol = bd->vol;
	bd->ents[bd->n].ce_reserved = 0;
	bd->ents[bd->n].ce_block = b;
	bd->ents[bd->n].ce_ie = ie;
	bd->n++;
	return 0;
}

/* Serialise E's state. Loop thread. */
static int ckpt_build(struct tdo_engine *e, uint64_t seq, uint8_t **out, size_t *outlen)
{
	uint64_t nents = 0, body, len;
	struct tdo_ckpt_hdr *h;
	struct tdo_vol_desc *vd;
	struct tdo_ckpt_seg *cs;
	struct build bd;
	uint8_t *buf;
	int err;

	for (uint32_t i = 0; i < e->nvols; i++) {
		uint64_t used = 0;
		for (uint64_t c = 0; c < e->vols[i]->idx.nchunks; c++)
			if (e->vols[i]->idx.chunks[c])
				used += e->vols[i]->idx.chunks[c]->used;
		nents += used;
	}
	body = (uint64_t)e->nvols * sizeof *vd + (uint64_t)e->sb.sb_seg_count * sizeof *cs +
	       nents * sizeof(struct tdo_ckpt_ent);
	len = round_up(TDO_BLOCK_SIZE + body, TDO_BLOCK_SIZE);
	if (len > e->sb.sb_ckpt_size) {
		tdo_log(TDO_LOG_ERROR, "checkpoint", "state (%llu bytes) exceeds the checkpoint area (%llu)",
		        (unsigned long long)len, (unsigned long long)e->sb.sb_ckpt_size);
		return -ENOSPC;
	}
	buf = dev_alloc(len);
	if (!buf)
		return -ENOMEM;
	h = (void *)buf;
	vd = (void *)(buf + TDO_BLOCK_SIZE);
	for (uint32_t i = 0; i < e->nvols; i++) {
		vd[i] = e->vols[i]->d;
		/* what is applied, not what is given out: after a crash the
		 * volume's LSN must not claim writes that never became durable */
		vd[i].vd_lsn = e->vols[i]->dur_lsn;
		vd[i].vd_epoch = e->vols[i]->dur_epoch;
	}
	cs = (void *)(vd + e->nvols);
	for (uint32_t i = 0; i < e->sb.sb_seg_count; i++)
		cs[i].cs_age = e->segs[i].age;
	bd.ents = (void *)(cs + e->sb.sb_seg_count);
	bd.n = 0;
	bd.cap = nents;
	for (uint32_t i = 0; i < e->nvols; i++) {
		bd.vol = e->vols[i]->d.vd_id;
		err = idx_walk(&e->vols[i]->idx, build_ent, &bd);
		if (err) {
			free(buf);
			return err;
		}
	}

	h->ck_magic = TDO_CKPT_MAGIC;
	h->ck_version = TDO_FORMAT_VERSION;
	h->ck_nvols = e->nvols;
	memcpy(h->ck_uuid, e->sb.sb_uuid, 16);
	h->ck_seq = seq;
	h->ck_log_seq = e->applied_seq;
	h->ck_log_seg = e->applied_seg;
	h->ck_log_off = e->applied_off;
	h->ck_next_vol_id = e->next_vol_id;
	h->ck_nsegs = e->sb.sb_seg_count;
	h->ck_nents = bd.n;
	h->ck_body_len = body;
	h->ck_body_csum = tdo_csum(buf + TDO_BLOCK_SIZE, body);
	h->ck_user_bytes = e->st.user_bytes;
	h->ck_log_bytes = e->st.log_bytes;
	h->ck_clean_bytes = e->st.clean_bytes;
	ckpt_hdr_seal(h);
	*out = buf;
	*outlen = len;
	return 0;
}

static int ckpt_store(struct dev *d, const struct tdo_sb *sb, uint64_t seq,
                      const uint8_t *buf, size_t len)
{
	uint64_t off = sb->sb_ckpt_off[seq & 1];
	int err;

	/* body first, header last: a torn write leaves a header that fails */
	if (len > TDO_BLOCK_SIZE) {
		err = dev_pwrite(d, buf + TDO_BLOCK_SIZE, len - TDO_BLOCK_SIZE, off + TDO_BLOCK_SIZE);
		if (err)
			return err;
	}
	err = dev_pwrite(d, buf, TDO_BLOCK_SIZE, off);
	if (err)
		return err;
	return dev_sync(d);
}

int ckpt_write_sync(struct tdo_engine *e)
{
	uint8_t *buf;
	size_t len;
	int err = ckpt_build(e, e->ckpt_seq + 1, &buf, &len);

	if (err)
		return err;
	err = ckpt_store(&e->dev, &e->sb, e->ckpt_seq + 1, buf, len);
	free(buf);
	if (err)
		return err;
	e->ckpt_seq++;
	e->ckpt_log_seq = e->applied_seq;
	e->st.ckpt_count++;
	e->st.ckpt_seq = e->ckpt_seq;
	e->log_since_ckpt = 0;
	return 0;
}

static void ckpt_work(uv_work_t *w)
{
	struct ckpt_job *j = w->data;

	j->status = ckpt_store(&j->e->dev, &j->e->sb, j->seq, j->buf, j->len);
}

static void ckpt_start(struct tdo_engine *e);

static void ckpt_after(uv_work_t *w, int status)
{
	struct ckpt_job *j = w->data;
	struct tdo_engine *e = j->e;
	int err = status ? status : j->status;

	e->ckpt = NULL;
	if (err) {
		eng_poison(e, err, "checkpoint write");
		for (uint32_t i = 0; i < j->nfreeing; i++)
			seg_unmark_freeing(e, j->freeing[i]);
	} else {
		e->ckpt_seq = j->seq;
		e->ckpt_log_seq = j->log_seq;
		e->st.ckpt_count++;
		e->st.ckpt_seq = j->seq;
		for (uint32_t i = 0; i < j->nfreeing; i++)
			seg_release(e, j->freeing[i]);
		tdo_log(TDO_LOG_DEBUG, "checkpoint", "checkpoint %llu durable, %u segments freed",
		        (unsigned long long)j->seq, j->nfreeing);
	}
	while (!tdo_list_empty(&j->waiters)) {
		struct waiter *wt = tdo_list_item(j->waiters.next, struct waiter, link);
		tdo_list_del(&wt->link);
		wt->cb(wt->arg, err);
		free(wt);
	}
	free(j->buf);
	free(j->freeing);
	free(j);
	if (e->ckpt_wanted)
		ckpt_start(e);
	wr_schedule(e);
	cln_maybe_start(e);
	eng_maybe_finish_close(e);
}

static void ckpt_start(struct tdo_engine *e)
{
	struct ckpt_job *j;
	int err;

	if (e->ckpt)
		return;
	e->ckpt_wanted = false;
	j = calloc(1, sizeof *j);
	if (!j) {
		eng_poison(e, -ENOMEM, "checkpoint");
		return;
	}
	j->e = e;
	j->seq = e->ckpt_seq + 1;
	tdo_list_init(&j->waiters);
	/* every waiter so far is covered by this snapshot */
	while (!tdo_list_empty(&e->ckpt_waiters)) {
		struct tdo_list *l = e->ckpt_waiters.next;
		tdo_list_del(l);
		tdo_list_add_tail(&j->waiters, l);
	}
	if (e->poison) {
		err = e->poison;
		goto fail;
	}
	err = ckpt_build(e, j->seq, &j->buf, &j->len);
	if (err)
		goto fail;
	j->log_seq = e->applied_seq;
	j->freeing = calloc(e->sb.sb_seg_count, sizeof *j->freeing);
	if (!j->freeing) {
		err = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < e->sb.sb_seg_count; i++)
		if (seg_mark_freeing(e, i))
			j->freeing[j->nfreeing++] = i;
	e->log_since_ckpt = 0;
	e->ckpt = j;
	j->work.data = j;
	err = uv_queue_work(e->loop, &j->work, ckpt_work, ckpt_after);
	if (err) {
		e->ckpt = NULL;
		for (uint32_t i = 0; i < j->nfreeing; i++)
			seg_unmark_freeing(e, j->freeing[i]);
		goto fail;
	}
	return;
fail:
	while (!tdo_list_empty(&j->waiters)) {
		struct waiter *wt = tdo_list_item(j->waiters.next, struct waiter, link);
		tdo_list_del(&wt->link);
		eng_defer(e, wt->cb, wt->arg, err);
		free(wt);
	}
	free(j->buf);
	free(j->freeing);
	free(j);
}

void ckpt_request(struct tdo_engine *e, tdo_done_cb cb, void *arg)
{
	if (cb) {
		struct waiter *wt = calloc(1, sizeof *wt);
		if (!wt) {
			eng_defer(e, cb, arg, -ENOMEM);
			return;
		}
		wt->cb = cb;
		wt->arg = arg;
		tdo_list_add_tail(&e->ckpt_waiters, &wt->link);
	}
	e->ckpt_wanted = true;
	/* a snapshot must sit on a batch boundary: wait for the batch in flight */
	if (!e->ckpt && !e->inflight)
		ckpt_start(e);
}

/* Loop thread, called by the writer between batches. */
void ckpt_poll(struct tdo_engine *e)
{
	if (e->ckpt_wanted && !e->ckpt && !e->inflight)
		ckpt_start(e);
}

static int load_area(struct tdo_engine *e, int which, struct tdo_ckpt_hdr *h, uint8_t **body)
{
	uint8_t *buf = dev_alloc(TDO_BLOCK_SIZE);
	uint64_t off = e->sb.sb_ckpt_off[which];
	int err;

	*body = NULL;
	if (!buf)
		return -ENOMEM;
	err = dev_pread(&e->dev, buf, TDO_BLOCK_SIZE, off);
	if (err)
		goto out;
	memcpy(h, buf, sizeof *h);
	if (!ckpt_hdr_valid(h) || memcmp(h->ck_uuid, e->sb.sb_uuid, 16) != 0 ||
	    h->ck_nsegs != e->sb.sb_seg_count || h->ck_nvols > e->sb.sb_max_vols ||
	    h->ck_body_len != (uint64_t)h->ck_nvols * sizeof(struct tdo_vol_desc) +
	                      (uint64_t)h->ck_nsegs * sizeof(struct tdo_ckpt_seg) +
	                      h->ck_nents * sizeof(struct tdo_ckpt_ent) ||
	    TDO_BLOCK_SIZE + h->ck_body_len > e->sb.sb_ckpt_size ||
	    h->ck_log_seg >= e->sb.sb_seg_count || h->ck_log_off > e->sb.sb_seg_size ||
	    h->ck_log_off % TDO_BLOCK_SIZE) {
		err = -EILSEQ;
		goto out;
	}
	free(buf);
	buf = dev_alloc(h->ck_body_len);
	if (!buf)
		return -ENOMEM;
	err = dev_pread(&e->dev, buf, round_up(h->ck_body_len, TDO_BLOCK_SIZE), off + TDO_BLOCK_SIZE);
	if (err)
		goto out;
	if (tdo_csum(buf, h->ck_body_len) != h->ck_body_csum) {
		err = -EILSEQ;
		goto out;
	}
	*body = buf;
	return 0;
out:
	free(buf);
	return err;
}

int ckpt_load(struct tdo_engine *e, uint64_t *log_seq, uint32_t *log_seg, uint32_t *log_off)
{
	struct tdo_ckpt_hdr h[2];
	uint8_t *body[2];
	int err[2], best = -1;
	const struct tdo_vol_desc *vd;
	const struct tdo_ckpt_seg *cs;
	const struct tdo_ckpt_ent *ce;
	uint8_t *b;

	for (int i = 0; i < 2; i++) {
		err[i] = load_area(e, i, &h[i], &body[i]);
		if (err[i] == -ENOMEM)
			return -ENOMEM;
		if (!err[i] && (best < 0 || h[i].ck_seq > h[best].ck_seq))
			best = i;
	}
	if (best < 0)
		return TDO_EDAMAGED;
	free(body[!best]);
	if (err[!best] == -EILSEQ && h[!best].ck_magic == TDO_CKPT_MAGIC)
		tdo_log(TDO_LOG_INFO, "recovery", "checkpoint area %c is torn or stale; using %c (seq %llu)",
		        'A' + !best, 'A' + best, (unsigned long long)h[best].ck_seq);
	b = body[best];
	vd = (const void *)b;
	cs = (const void *)(vd + h[best].ck_nvols);
	ce = (const void *)(cs + h[best].ck_nsegs);

	e->ckpt_seq = h[best].ck_seq;
	e->ckpt_log_seq = h[best].ck_log_seq;
	e->next_vol_id = h[best].ck_next_vol_id;
	e->st.user_bytes = h[best].ck_user_bytes;
	e->st.log_bytes = h[best].ck_log_bytes;
	e->st.clean_bytes = h[best].ck_clean_bytes;
	for (uint32_t i = 0; i < h[best].ck_nvols; i++) {
		struct vol *v;
		int r;

		if (memchr(vd[i].vd_name, 0, sizeof vd[i].vd_name) == NULL ||
		    !tdo_vol_name_valid(vd[i].vd_name) || vd[i].vd_size % TDO_SECTOR_SIZE ||
		    vd[i].vd_id >= e->next_vol_id) {
			free(b);
			return TDO_EDAMAGED;
		}
		v = vol_new(&vd[i]);
		if (!v) {
			free(b);
			return -ENOMEM;
		}
		r = vol_add(e, v);
		if (r) {
			vol_destroy(e, v);
			free(b);
			return r == -ENOMEM ? r : TDO_EDAMAGED;
		}
	}
	for (uint32_t i = 0; i < h[best].ck_nsegs; i++)
		e->segs[i].age = cs[i].cs_age;
	for (uint64_t i = 0; i < h[best].ck_nents; i++) {
		struct vol *v = eng_vol(e, ce[i].ce_vol);
		struct tdo_ie old;
		int r;

		if (!v || ce[i].ce_block >= v->idx.nblocks) {
			free(b);
			return TDO_EDAMAGED;
		}
		if (ie_has_payload(ce[i].ce_ie) &&
		    (eng_sector_to_seg(e, ie_sector(ce[i].ce_ie)) >= e->sb.sb_seg_count ||
		     ie_nsect(ce[i].ce_ie) == 0 || ie_nsect(ce[i].ce_ie) > TDO_BLOCK_SIZE / TDO_SECTOR_SIZE)) {
			free(b);
			return TDO_EDAMAGED;
		}
		r = idx_set(&v->idx, ce[i].ce_block, ce[i].ce_ie, &old);
		if (r) {
			free(b);
			return r;
		}
		eng_account(e, v, old, ce[i].ce_ie);
	}
	*log_seq = h[best].ck_log_seq;
	*log_seg = h[best].ck_log_seg;
	*log_off = h[best].ck_log_off;
	free(b);
	return 0;
}
