/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: replay after the checkpoint, and the one function that applies a
 * record to the in-memory state (replay and the live write path share it,
 * so both reach the same state from the same log).
 *
 * Replay walks the chain of batches from the checkpoint's position: batch
 * seq must rise by one; when the next batch is not right after the last,
 * the chain continues at the start of the segment whose first batch has
 * the expected seq. Every batch's header area and payloads are verified.
 * The writer keeps one batch in flight, so only the newest batch can be
 * torn: a batch that fails its payload checksums and has no successor is
 * the torn tail and is cut off; one that has a successor is damage in the
 * middle of the log, kept so that reads of those blocks fail with -EIO.
 *
 * A record applies to a block only if its LSN is at least the entry's
 * (cleaner copies repeat an LSN and move a block; an older copy never
 * overrides a newer write).
 *
 * Must never: apply a batch that failed its checks and has no successor.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int apply_range(struct tdo_engine *e, struct vol *v, const struct tdo_rec_hdr *r)
{
	uint64_t end = r->rec_block + r->rec_count;
	struct tdo_ie neu = r->rec_type == TDO_REC_ZERO ? ie_make(TDO_IE_ZERO, r->rec_lsn, 0, 0, 0)
	                                                : ie_make(TDO_IE_HOLE, 0, 0, 0, 0);

	if (end > v->idx.nblocks)
		end = v->idx.nblocks;
	for (uint64_t b = r->rec_block; b < end; b++) {
		struct idx_chunk *c = v->idx.chunks[b >> IDX_CHUNK_SHIFT];
		struct tdo_ie old;
		int err;

		if (!c && r->rec_type == TDO_REC_TRIM) {
			b |= IDX_CHUNK - 1; /* already holes */
			continue;
		}
		if (c && ie_lsn(c->e[b & (IDX_CHUNK - 1)]) > r->rec_lsn)
			continue;
		err = idx_set(&v->idx, b, neu, &old);
		if (err)
			return err;
		eng_account(e, v, old, neu);
	}
	return 0;
}

int rcv_apply(struct tdo_engine *e, const struct tdo_rec_hdr *r,
              const void *payload, uint64_t sector, bool replay,
              uint64_t expect_sector)
{
	struct vol *v;
	struct tdo_vol_desc d;

	switch (r->rec_type) {
	case TDO_REC_DATA: {
		struct tdo_ie old, neu;
		unsigned nsect = (r->rec_plen + TDO_SECTOR_SIZE - 1) / TDO_SECTOR_SIZE;

		v = eng_vol(e, r->rec_vol);
		if (!v || r->rec_block >= v->idx.nblocks)
			return 0; /* deleted or shrunk since */
		old = idx_get(&v->idx, r->rec_block);
		if (ie_lsn(old) > r->rec_lsn)
			return 0;
		if (expect_sector != UINT64_MAX &&
		    (!ie_has_payload(old) || ie_sector(old) != expect_sector || ie_lsn(old) != r->rec_lsn))
			return 0; /* the copied version was superseded meanwhile */
		if (nsect == 0 || nsect > TDO_BLOCK_SIZE / TDO_SECTOR_SIZE)
			return replay ? 0 : -EIO;
		neu = ie_make((r->rec_flags & TDO_RECF_LZ4) ? TDO_IE_LZ4 : TDO_IE_DATA, r->rec_lsn,
		              sector, nsect, (uint32_t)r->rec_pcsum);
		if (idx_set(&v->idx, r->rec_block, neu, &old))
			return -ENOMEM;
		eng_account(e, v, old, neu);
		if (replay && r->rec_lsn > v->d.vd_lsn)
			v->d.vd_lsn = r->rec_lsn;
		return 0;
	}
	case TDO_REC_ZERO:
	case TDO_REC_TRIM:
		v = eng_vol(e, r->rec_vol);
		if (!v)
			return 0;
		if (replay && r->rec_lsn > v->d.vd_lsn)
			v->d.vd_lsn = r->rec_lsn;
		return apply_range(e, v, r);
	default:
		break;
	}
	if (!replay)
		return 0; /* volume records changed the table when submitted */
	switch (r->rec_type) {
	case TDO_REC_VOL_CREATE:
	case TDO_REC_VOL_RESIZE:
		if (!payload || r->rec_plen != sizeof d)
			return 0;
		memcpy(&d, payload, sizeof d);
		if (!memchr(d.vd_name, 0, sizeof d.vd_name) || !tdo_vol_name_valid(d.vd_name) ||
		    d.vd_size == 0 || d.vd_size % TDO_SECTOR_SIZE)
			return 0;
		v = eng_vol(e, d.vd_id);
		if (r->rec_type == TDO_REC_VOL_RESIZE)
			return v ? vol_apply_resize(e, v, d.vd_size) : 0;
		if (v)
			return 0;
		v = vol_new(&d);
		if (!v)
			return -ENOMEM;
		if (vol_add(e, v)) {
			vol_destroy(e, v);
			return 0;
		}
		if (d.vd_id >= e->next_vol_id)
			e->next_vol_id = d.vd_id + 1;
		return 0;
	case TDO_REC_VOL_DELETE:
		v = eng_vol(e, r->rec_vol);
		if (v) {
			vol_remove(e, v);
			vol_destroy(e, v);
		}
		if (r->rec_vol >= e->next_vol_id)
			e->next_vol_id = r->rec_vol + 1;
		return 0;
	}
	return 0;
}

/* ---- replay ------------------------------------------------------------- */

struct win {
	uint8_t *buf;
	uint32_t cap;
	uint32_t seg;
	uint32_t off, len;          /* bytes of the segment held */
};

/* Make bytes [off, off+len) of segment SEG available; returns a pointer. */
static int win_get(struct tdo_engine *e, struct win *w, uint32_t seg, uint32_t off,
                   uint32_t len, uint8_t **out)
{
	uint64_t segsz = e->sb.sb_seg_size;
	int err;

	if ((uint64_t)off + len > segsz || len > w->cap)
		return -EILSEQ;
	if (w->seg != seg || off < w->off || off + len > w->off + w->len) {
		uint32_t n = (uint32_t)(segsz - off < w->cap ? segsz - off : w->cap);
		err = dev_pread(&e->dev, w->buf, n, e->sb.sb_seg_start + (uint64_t)seg * segsz + off);
		if (err)
			return err;
		w->seg = seg;
		w->off = off;
		w->len = n;
	}
	*out = w->buf + (off - w->off);
	return 0;
}

/* Batch at (SEG, OFF) with seq SEQ: 0 and *BH when its header area checks
 * out, -EILSEQ when there is no such batch. */
static int batch_at(struct tdo_engine *e, struct win *w, uint32_t seg, uint32_t off,
                    uint64_t seq, uint8_t **bh)
{
	uint64_t limit;
	uint8_t *p;
	int err;

	if ((uint64_t)off + TDO_BLOCK_SIZE > e->sb.sb_seg_size)
		return -EILSEQ;
	limit = e->sb.sb_seg_size - off;
	err = win_get(e, w, seg, off, TDO_BLOCK_SIZE, &p);
	if (err)
		return err;
	if (batch_check_head((const void *)p, e->sb.sb_uuid, seq, limit))
		return -EILSEQ;
	err = win_get(e, w, seg, off, ((const struct tdo_batch_hdr *)(void *)p)->bh_len, &p);
	if (err)
		return err;
	if (batch_check_area(p))
		return -EILSEQ;
	*bh = p;
	return 0;
}

static bool payloads_ok(const uint8_t *batch)
{
	const struct tdo_batch_hdr *bh = (const void *)batch;
	const struct tdo_rec_hdr *r = (const void *)(bh + 1);

	for (uint32_t i = 0; i < bh->bh_nrec; i++)
		if (r[i].rec_plen && tdo_csum(batch + r[i].rec_poff, r[i].rec_plen) != r[i].rec_pcsum)
			return false;
	return true;
}

/* The segment whose first batch has SEQ, or UINT32_MAX. */
static uint32_t find_seg(struct tdo_engine *e, uint64_t **first, uint64_t seq)
{
	if (!*first) {
		uint8_t *page = dev_alloc(TDO_BLOCK_SIZE);
		*first = calloc(e->sb.sb_seg_count, sizeof **first);
		if (!page || !*first) {
			free(page);
			return UINT32_MAX;
		}
		for (uint32_t s = 0; s < e->sb.sb_seg_count; s++) {
			const struct tdo_batch_hdr *bh = (const void *)page;
			if (dev_pread(&e->dev, page, TDO_BLOCK_SIZE,
			              e->sb.sb_seg_start + (uint64_t)s * e->sb.sb_seg_size))
				continue;
			if (!batch_check_head(bh, e->sb.sb_uuid, 0, e->sb.sb_seg_size))
				(*first)[s] = bh->bh_seq;
		}
		free(page);
	}
	for (uint32_t s = 0; s < e->sb.sb_seg_count; s++)
		if ((*first)[s] == seq)
			return s;
	return UINT32_MAX;
}

/* Where the batch SEQ would be after one ending at (SEG, OFF). */
static int locate(struct tdo_engine *e, struct win *w, uint64_t **first,
                  uint32_t *seg, uint32_t *off, uint64_t seq, uint8_t **bh)
{
	uint32_t s;

	if (batch_at(e, w, *seg, *off, seq, bh) == 0)
		return 0;
	s = find_seg(e, first, seq);
	if (s == UINT32_MAX || batch_at(e, w, s, 0, seq, bh))
		return -EILSEQ;
	*seg = s;
	*off = 0;
	return 0;
}

int rcv_replay(struct tdo_engine *e, uint64_t seq, uint32_t seg, uint32_t off)
{
	struct win w = { 0 };
	uint64_t *first = NULL;
	uint8_t *bh;
	int err = 0;

	w.cap = (uint32_t)(e->sb.sb_seg_size < (8u << 20) ? e->sb.sb_seg_size : (8u << 20));
	w.buf = dev_alloc(w.cap);
	w.seg = UINT32_MAX;
	if (!w.buf)
		return -ENOMEM;

	while (locate(e, &w, &first, &seg, &off, seq, &bh) == 0) {
		const struct tdo_batch_hdr *h = (const void *)bh;
		const struct tdo_rec_hdr *r = (const void *)(h + 1);
		uint32_t len = h->bh_len;
		uint8_t *copy = NULL;

		if (!payloads_ok(bh)) {
			/* torn tail, or damage with a successor? */
			uint32_t s2 = seg, o2 = off + len;
			uint8_t *nb;

			copy = malloc(len);
			if (!copy) {
				err = -ENOMEM;
				break;
			}
			memcpy(copy, bh, len);
			if (locate(e, &w, &first, &s2, &o2, seq + 1, &nb)) {
				tdo_log(TDO_LOG_INFO, "recovery",
				        "cut torn tail: batch %llu at segment %u offset %u failed its checksums",
				        (unsigned long long)seq, seg, off);
				free(copy);
				break;
			}
			tdo_log(TDO_LOG_WARN, "recovery",
			        "batch %llu at segment %u offset %u is damaged; its blocks will read as errors",
			        (unsigned long long)seq, seg, off);
			bh = copy;
			h = (const void *)bh;
			r = (const void *)(h + 1);
		}
		for (uint32_t i = 0; i < h->bh_nrec; i++) {
			uint64_t sector = (e->sb.sb_seg_start + (uint64_t)seg * e->sb.sb_seg_size + off +
			                   r[i].rec_poff) / TDO_SECTOR_SIZE;
			err = rcv_apply(e, &r[i], r[i].rec_plen ? bh + r[i].rec_poff : NULL, sector, true,
			                UINT64_MAX);
			if (err)
				break;
			/* the lifetime counters, as the write path keeps them */
			if (r[i].rec_type == TDO_REC_DATA && (r[i].rec_flags & TDO_RECF_RELOC))
				e->st.clean_bytes += r[i].rec_plen;
			else if (r[i].rec_type == TDO_REC_DATA)
				e->st.user_bytes += TDO_BLOCK_SIZE;
		}
		free(copy);
		if (err)
			break;
		e->segs[seg].age = seq;
		e->st.replayed_batches++;
		e->st.log_bytes += len;
		off += len;
		seq++;
	}
	free(w.buf);
	free(first);
	if (err)
		return err;
	e->head_seg = seg;
	e->head_off = off;
	/* skip one seq: a torn batch with the next seq may still sit on the
	 * device and must never be mistaken for a new one */
	e->next_seq = seq + 1;
	e->applied_seg = seg;
	e->applied_off = off;
	e->applied_seq = e->next_seq;
	if (e->st.replayed_batches)
		tdo_log(TDO_LOG_INFO, "recovery", "replayed %llu batches; log head at segment %u offset %u",
		        (unsigned long long)e->st.replayed_batches, seg, off);
	return 0;
}
