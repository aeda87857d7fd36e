/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the cleaner reclaims segments in the background.
 *
 * When free segments run low it picks a victim by LFS cost-benefit,
 * (1 - u) * age / (1 + u) with u the segment's live fraction and age how
 * many batches ago it was last written; reads the whole segment in a
 * worker; walks its batches and, for every record the index still points
 * at, queues a copy (TDO_RECF_RELOC: same LSN, epoch and checksum) ahead of
 * client writes. The copy moves the index entry only if the entry still
 * names the old place when the copy is durable. An empty segment becomes
 * free only through segment.c: at once (seg_try_free) when nothing durable
 * can still need it, else by the next checkpoint (checkpoint.c).
 *
 * Copies keep the original payload checksum, so a record that was damaged
 * stays an error after the move instead of becoming valid.
 *
 * Must never: change a segment's state itself (segment.c does), or copy a
 * version the index no longer names.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct clean_job {
	uv_work_t work;
	struct tdo_engine *e;
	uint32_t seg;
	uint8_t *buf;
	int status;
	int outstanding;
	uint32_t copies;
};

static int cln_pick_victim(struct tdo_engine *e)
{
	double best = 0;
	int victim = -1;

	for (uint32_t i = 0; i < e->sb.sb_seg_count; i++) {
		struct seg *s = &e->segs[i];
		double u, age, score;

		if (s->state != SEG_SEALED || s->cleaning || s->live == 0 || s->stuck)
			continue;
		u = (double)s->live / (double)e->sb.sb_seg_size;
		if (u > 0.97)
			continue;
		age = (double)(e->next_seq - s->age) + 1;
		score = e->opts.cleaner == TDO_CLEAN_GREEDY ? 1 - u : (1 - u) * age / (1 + u);
		if (score > best) {
			best = score;
			victim = (int)i;
		}
	}
	return victim;
}

static void job_finish(struct tdo_engine *e, struct clean_job *j)
{
	struct seg *s = &e->segs[j->seg];

	s->cleaning = false;
	if (s->live) {
		/* something in it could not be parsed: leave it alone */
		s->stuck = true;
		tdo_log(TDO_LOG_WARN, "cleaner", "segment %u keeps %llu live bytes after cleaning; skipping it from now on",
		        j->seg, (unsigned long long)s->live);
	} else {
		e->st.segs_cleaned++;
		seg_try_free(e, j->seg);
	}
	tdo_log(TDO_LOG_DEBUG, "cleaner", "segment %u cleaned, %u records copied", j->seg, j->copies);
	free(j->buf);
	free(j);
	e->clean = NULL;
	cln_maybe_start(e);
	eng_maybe_finish_close(e);
}

void cln_reloc_done(struct tdo_engine *e, struct wreq *w)
{
	struct clean_job *j = w->job;

	free(w);
	if (--j->outstanding == 0)
		job_finish(e, j);
}

static void clean_work(uv_work_t *wk)
{
	struct clean_job *j = wk->data;
	struct tdo_engine *e = j->e;

	j->status = dev_pread(&e->dev, j->buf, e->sb.sb_seg_size,
	                      e->sb.sb_seg_start + (uint64_t)j->seg * e->sb.sb_seg_size);
}

static void clean_after(uv_work_t *wk, int status)
{
	struct clean_job *j = wk->data;
	struct tdo_engine *e = j->e;
	uint64_t seg_base = e->sb.sb_seg_start + (uint64_t)j->seg * e->sb.sb_seg_size;
	uint32_t off = 0;

	if (status || j->status) {
		tdo_log(TDO_LOG_ERROR, "cleaner", "reading segment %u: %s", j->seg,
		        tdo_strerror(status ? status : j->status));
		job_finish(e, j);
		return;
	}
	j->outstanding = 1; /* held until the walk is over */
	while (off + TDO_BLOCK_SIZE <= e->sb.sb_seg_size && !e->poison) {
		const struct tdo_batch_hdr *bh = (const void *)(j->buf + off);
		const struct tdo_rec_hdr *r = (const void *)(bh + 1);

		if (batch_check_head(bh, e->sb.sb_uuid, 0, e->sb.sb_seg_size - off) ||
		    batch_check_area(bh))
			break;
		for (uint32_t i = 0; i < bh->bh_nrec; i++) {
			uint64_t sector = (seg_base + off + r[i].rec_poff) / TDO_SECTOR_SIZE;
			struct wreq *w;

			if (!eng_record_live(e, &r[i], sector, NULL, NULL))
				continue;
			w = calloc(1, sizeof *w);
			if (!w)
				break;
			w->kind = WR_RELOC;
			w->rh = r[i];
			w->payload = j->buf + off + r[i].rec_poff;
			w->old_sector = sector;
			w->job = j;
			w->vol = r[i].rec_vol;
			j->outstanding++;
			j->copies++;
			wr_submit(e, w);
		}
		off += bh->bh_len;
	}
	if (--j->outstanding == 0)
		job_finish(e, j);
}

void cln_maybe_start(struct tdo_engine *e)
{
	uint32_t reclaim = 0, freeing = 0;
	struct clean_job *j;
	int victim;

	if (e->clean || e->closing || e->poison || e->opts.no_cleaner)
		return;
	if (e->seg_free >= e->clean_low)
		return;
	for (uint32_t i = 0; i < e->sb.sb_seg_count; i++) {
		if (seg_try_free(e, i))
			continue;
		if (seg_reclaimable(e, i))
			reclaim++;
		else if (e->segs[i].state == SEG_FREEING)
			freeing++;
	}
	if (e->seg_free + reclaim + freeing >= e->clean_high) {
		if (reclaim)
			ckpt_request(e, NULL, NULL);
		return;
	}
	victim = cln_pick_victim(e);
	if (victim < 0) {
		if (reclaim)
			ckpt_request(e, NULL, NULL);
		return;
	}
	j = calloc(1, sizeof *j);
	if (!j)
		return;
	j->buf = dev_alloc(e->sb.sb_seg_size);
	if (!j->buf) {
		free(j);
		return;
	}
	j->e = e;
	j->seg = (uint32_t)victim;
	e->segs[victim].cleaning = true;
	e->clean = j;
	j->work.data = j;
	if (uv_queue_work(e->loop, &j->work, clean_work, clean_after)) {
		e->segs[victim].cleaning = false;
		e->clean = NULL;
		free(j->buf);
		free(j);
	}
}
