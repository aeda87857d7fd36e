/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: replay after the checkpoint, and the one function that applies a
 * record to the in-memory state (replay and the live write path share it,
 * so both reach the same state from the same log).
 *
 * Replay walks the chain of batches from the checkpoint's position: batch
 * seq must rise by one; when the next batch is not right after the last,
 * the chain continues at the start of the segment whose first batch has
 * the expected seq. Only header areas are read (and verified): the index
 * needs nothing else, and every payload keeps its checksum in the index,
 * so reads catch damage. The writer keeps one batch in flight, so only the
 * newest batch can be torn: its payloads are read and verified, and if they
 * fail it is the torn tail and is cut off. Where the chain stops, the
 * device is searched for a valid batch with a higher seq (check_end): one
 * means the stop is damage, not the end, and open fails with
 * TDO_ELOGDAMAGED instead of cutting acknowledged batches off. A read error
 * fails open too; it is never taken for the end of the log.
 *
 * Client records apply in log order, whatever their LSNs (a replica's
 * resync copy may carry an older LSN than what it replaces). A cleaner
 * copy applies only over the very version it copied (same LSN and
 * payload checksum), so an older copy never overrides a newer write.
 *
 * Must never: apply a batch that failed its checks and has no successor;
 * end the log before a batch that a valid later batch proves durable;
 * write to the device (open writes its checkpoint only after replay).
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
		err = idx_set(&v->idx, b, neu, &old);
		if (err)
			return err;
		eng_account(e, v, old, neu);
	}
	return 0;
}

/* A client record is durable: the volume's durable LSN (and, in replay,
 * its LSN) follow the newest one. */
static void note_lsn(struct vol *v, const struct tdo_rec_hdr *r, bool replay)
{
	if (r->rec_lsn >= v->dur_lsn) {
		v->dur_lsn = r->rec_lsn;
		v->dur_epoch = r->rec_epoch;
	}
	if (replay && r->rec_lsn >= v->d.vd_lsn) {
		v->d.vd_lsn = r->rec_lsn;
		v->d.vd_epoch = r->rec_epoch;
	}
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
		/* A client record takes effect in log order (overlapping
		 * writes reach the log in submission order; a replica's
		 * resync copy may carry an older LSN than what it replaces).
		 * A cleaner copy takes effect only over the very version it
		 * copied: live, the sector it was read from; in replay, the
		 * same LSN and payload checksum. */
		if (r->rec_flags & TDO_RECF_RELOC) {
			if (expect_sector != UINT64_MAX ?
			    (!ie_has_payload(old) || ie_sector(old) != expect_sector || ie_lsn(old) != r->rec_lsn) :
			    (!ie_has_payload(old) || ie_lsn(old) != r->rec_lsn || old.ie_c != (uint32_t)r->rec_pcsum))
				return 0; /* the copied version was superseded meanwhile */
		}
		if (nsect == 0 || nsect > TDO_BLOCK_SIZE / TDO_SECTOR_SIZE)
			return replay ? 0 : -EIO;
		neu = ie_make((r->rec_flags & TDO_RECF_LZ4) ? TDO_IE_LZ4 : TDO_IE_DATA, r->rec_lsn,
		              sector, nsect, (uint32_t)r->rec_pcsum);
		if (idx_set(&v->idx, r->rec_block, neu, &old))
			return -ENOMEM;
		eng_account(e, v, old, neu);
		if (!(r->rec_flags & TDO_RECF_RELOC))
			note_lsn(v, r, replay);
		return 0;
	}
	case TDO_REC_ZERO:
	case TDO_REC_TRIM:
		v = eng_vol(e, r->rec_vol);
		if (!v)
			return 0;
		note_lsn(v, r, replay);
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
		if (r->rec_type == TDO_REC_VOL_RESIZE) {
			if (!v)
				return 0;
			/* a resize record also carries the LSN and epoch the
			 * volume had (tdo_vol_set_lsn may have lowered them) */
			v->d.vd_lsn = v->dur_lsn = d.vd_lsn;
			v->d.vd_epoch = v->dur_epoch = d.vd_epoch;
			return vol_apply_resize(e, v, d.vd_size);
		}
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

/* The header area of the batch at (SEG, OFF) with seq SEQ, read into *BUF
 * (grown as needed): 0, or -EILSEQ when there is no such batch. Payloads
 * are not read: replay needs only the headers, except for the last batch. */
static int batch_at(struct tdo_engine *e, uint8_t **buf, uint32_t *cap, uint32_t seg,
                    uint32_t off, uint64_t seq)
{
	uint64_t base = e->sb.sb_seg_start + (uint64_t)seg * e->sb.sb_seg_size + off;
	const struct tdo_batch_hdr *bh;
	int err;

	if ((uint64_t)off + TDO_BLOCK_SIZE > e->sb.sb_seg_size)
		return -EILSEQ;
	if ((err = dev_pread(&e->dev, *buf, TDO_BLOCK_SIZE, base)))
		return err;
	bh = (const void *)*buf;
	if (batch_check_head(bh, e->sb.sb_uuid, seq, e->sb.sb_seg_size - off))
		return -EILSEQ;
	if (bh->bh_hdr_len > *cap) {
		uint32_t n = bh->bh_hdr_len;
		uint8_t *nb = dev_alloc(n);
		if (!nb)
			return -ENOMEM;
		memcpy(nb, *buf, TDO_BLOCK_SIZE);
		free(*buf);
		*buf = nb;
		*cap = n;
		bh = (const void *)*buf;
	}
	if (bh->bh_hdr_len > TDO_BLOCK_SIZE &&
	    (err = dev_pread(&e->dev, *buf + TDO_BLOCK_SIZE, bh->bh_hdr_len - TDO_BLOCK_SIZE,
	                     base + TDO_BLOCK_SIZE)))
		return err;
	return batch_check_area(*buf) ? -EILSEQ : 0;
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

/*
 * The first page of every segment, read once per replay: FIRST[s] is the
 * seq its batch header claims (0: no header there), SUSPECT[s] is set when
 * the page is ours (our magic or our uuid) but not a batch whose seq can be
 * trusted (its first record header must verify and repeat the seq).
 */
struct firsts {
	uint64_t *first;
	uint8_t *suspect;
};

static int firsts_load(struct tdo_engine *e, struct firsts *f)
{
	uint8_t *page;
	int err = 0;

	if (f->first)
		return 0;
	page = dev_alloc(TDO_BLOCK_SIZE);
	f->first = calloc(e->sb.sb_seg_count, sizeof *f->first);
	f->suspect = calloc(e->sb.sb_seg_count, 1);
	if (!page || !f->first || !f->suspect)
		err = -ENOMEM;
	for (uint32_t s = 0; s < e->sb.sb_seg_count && !err; s++) {
		const struct tdo_batch_hdr *bh = (const void *)page;
		const struct tdo_rec_hdr *r = (const void *)(bh + 1);

		err = dev_pread(&e->dev, page, TDO_BLOCK_SIZE, e->sb.sb_seg_start + (uint64_t)s * e->sb.sb_seg_size);
		if (err) {
			tdo_log(TDO_LOG_ERROR, "recovery", "reading the first page of segment %u failed: %s", s,
			        tdo_strerror(err));
			break;
		}
		if (!batch_check_head(bh, e->sb.sb_uuid, 0, e->sb.sb_seg_size)) {
			f->first[s] = bh->bh_seq;
			f->suspect[s] = !rec_valid(&r[0]) || r[0].rec_seq != bh->bh_seq;
		} else {
			f->suspect[s] = bh->bh_magic == TDO_BATCH_MAGIC || !memcmp(bh->bh_uuid, e->sb.sb_uuid, 16);
		}
	}
	free(page);
	if (err) {
		free(f->first);
		free(f->suspect);
		f->first = NULL;
		f->suspect = NULL;
	}
	return err;
}

/* The segment whose first batch has SEQ into *S: 0, -EILSEQ when there is
 * none, or a read error. */
static int find_seg(struct tdo_engine *e, struct firsts *f, uint64_t seq, uint32_t *s)
{
	int err = firsts_load(e, f);

	if (err)
		return err;
	for (*s = 0; *s < e->sb.sb_seg_count; (*s)++)
		if (f->first[*s] == seq)
			return 0;
	return -EILSEQ;
}

/* Where the batch SEQ would be after one ending at (SEG, OFF): 0, -EILSEQ
 * when it is nowhere, or a read error (never taken for the end of the log). */
static int locate(struct tdo_engine *e, uint8_t **buf, uint32_t *cap, struct firsts *f,
                  uint32_t *seg, uint32_t *off, uint64_t seq)
{
	uint32_t s;
	int err = batch_at(e, buf, cap, *seg, *off, seq);

	if (err != -EILSEQ)
		return err;
	if ((err = find_seg(e, f, seq, &s)))
		return err;
	if ((err = batch_at(e, buf, cap, s, 0, seq)))
		return err;
	*seg = s;
	*off = 0;
	return 0;
}

/* Apply a batch whose header area is HDR. FULL, when not NULL, is the whole
 * batch (payloads too); otherwise the few payloads that replay needs
 * (volume descriptors) are read one by one. */
static int apply_batch(struct tdo_engine *e, const uint8_t *hdr, const uint8_t *full,
                       uint32_t seg, uint32_t off)
{
	const struct tdo_batch_hdr *h = (const void *)hdr;
	const struct tdo_rec_hdr *r = (const void *)(h + 1);
	uint64_t base = e->sb.sb_seg_start + (uint64_t)seg * e->sb.sb_seg_size + off;
	int err = 0;

	for (uint32_t i = 0; i < h->bh_nrec && !err; i++) {
		uint64_t sector = (base + r[i].rec_poff) / TDO_SECTOR_SIZE;
		const void *payload = NULL;
		uint8_t *tmp = NULL;

		if (r[i].rec_plen && (r[i].rec_type == TDO_REC_VOL_CREATE || r[i].rec_type == TDO_REC_VOL_RESIZE)) {
			if (full) {
				payload = full + r[i].rec_poff;
			} else {
				size_t n = round_up(r[i].rec_plen, TDO_SECTOR_SIZE);
				tmp = dev_alloc(n);
				if (!tmp)
					return -ENOMEM;
				if ((err = dev_pread(&e->dev, tmp, n, base + r[i].rec_poff))) {
					free(tmp);
					return err;
				}
				payload = tmp;
			}
			if (tdo_csum(payload, r[i].rec_plen) != r[i].rec_pcsum) {
				tdo_log(TDO_LOG_WARN, "recovery", "volume record in batch %llu at segment %u offset %u is damaged; skipped",
				        (unsigned long long)h->bh_seq, seg, off);
				payload = NULL;
			}
		}
		if (payload || !(r[i].rec_type == TDO_REC_VOL_CREATE || r[i].rec_type == TDO_REC_VOL_RESIZE))
			err = rcv_apply(e, &r[i], payload, sector, true, UINT64_MAX);
		free(tmp);
		/* the lifetime counters, as the write path keeps them */
		if (r[i].rec_type == TDO_REC_DATA && (r[i].rec_flags & TDO_RECF_RELOC))
			e->st.clean_bytes += r[i].rec_plen;
		else if (r[i].rec_type == TDO_REC_DATA)
			e->st.user_bytes += TDO_BLOCK_SIZE;
	}
	if (!err) {
		e->segs[seg].age = h->bh_seq;
		e->st.replayed_batches++;
		e->st.log_bytes += h->bh_len;
	}
	return err;
}

/* ---- the end of the log: a torn tail, or damage -------------------------- */

/*
 * Replay stopped at (SEG, OFF), where batch SEQ was due and is not (or is
 * torn). That is the end of the log when no later batch is on the device,
 * and damage in its middle when one is. The writer keeps one batch in
 * flight (e->inflight) and wr_schedule builds the next only from
 * batch_done, once the previous batch's write and its fdatasync have
 * completed (io_uring: a write linked to an fdatasync; workers: dev_pwrite
 * then dev_sync); open writes its checkpoint before any batch. So a crash
 * or power cut tears at most the newest batch, and a batch with a higher
 * seq and a valid header area proves that batch SEQ was durable: cutting
 * the log there would drop acknowledged writes.
 *
 * Where a later batch can be: the chain goes on either in the rest of
 * SEG, or at the start of a segment it moved to after SEQ - 1. Such a
 * segment's first page holds a batch with seq >= SEQ, or is damaged (a
 * damaged SEQ itself, with SEQ + 1 after it). A segment whose first batch
 * is intact and older than SEQ has not been opened since, so holds nothing
 * later (a reused segment's older batches all have lower seqs). A first
 * page with neither our magic nor our uuid is taken for never written: a
 * segment-opening header damaged that badly is the one case not seen here
 * (unless the chain reaches a later segment start, which is).
 */
struct later {
	uint64_t n;                 /* valid batches with seq > SEQ */
	uint64_t first_seq;         /* the lowest of them, and where */
	uint32_t first_seg, first_off;
};

/* Count the valid batches with seq > SEQ in segment S from FROM on. */
static int scan_later(struct tdo_engine *e, uint8_t *buf, uint32_t win, uint32_t s, uint32_t from,
                      uint64_t seq, struct later *l)
{
	uint64_t base = e->sb.sb_seg_start + (uint64_t)s * e->sb.sb_seg_size;
	uint64_t size = e->sb.sb_seg_size, wstart = from, wlen = 0;
	uint32_t hdr_max = batch_hdr_len(TDO_BATCH_MAX_REC);

	for (uint64_t o = from; o + TDO_BLOCK_SIZE <= size;) {
		const struct tdo_batch_hdr *bh;
		int err;

		/* the window holds any header area that starts in it */
		if (o + hdr_max > wstart + wlen && wstart + wlen < size) {
			wstart = o;
			wlen = size - o < win ? size - o : win;
			if ((err = dev_pread(&e->dev, buf, wlen, base + wstart))) {
				tdo_log(TDO_LOG_ERROR, "recovery", "reading segment %u offset %llu failed: %s", s,
				        (unsigned long long)wstart, tdo_strerror(err));
				return err;
			}
		}
		bh = (const void *)(buf + (o - wstart));
		if (batch_check_head(bh, e->sb.sb_uuid, 0, size - o) || bh->bh_hdr_len > wstart + wlen - o ||
		    batch_check_area(bh)) {
			o += TDO_BLOCK_SIZE;
			continue;
		}
		if (bh->bh_seq > seq) {
			if (!l->n || bh->bh_seq < l->first_seq) {
				l->first_seq = bh->bh_seq;
				l->first_seg = s;
				l->first_off = (uint32_t)o;
			}
			l->n++;
		}
		o += bh->bh_len;
	}
	return 0;
}

static int check_end(struct tdo_engine *e, struct firsts *f, uint32_t seg, uint32_t off, uint64_t seq,
                     struct rcv_damage *dmg)
{
	uint32_t win = e->sb.sb_seg_size < (8u << 20) ? (uint32_t)e->sb.sb_seg_size : 8u << 20;
	uint8_t *buf = dev_alloc(win);
	struct later l = { 0 };
	int err = buf ? firsts_load(e, f) : -ENOMEM;

	if (!err)
		err = scan_later(e, buf, win, seg, off, seq, &l);
	for (uint32_t s = 0; s < e->sb.sb_seg_count && !err; s++)
		if (s != seg && (f->first[s] >= seq || f->suspect[s]))
			err = scan_later(e, buf, win, s, 0, seq, &l);
	free(buf);
	if (err || !l.n)
		return err;
	/* the first later batch opens the run after the damage: inside a
	 * segment other than SEG, whatever precedes it there is damaged from
	 * that segment's start */
	if (l.first_seg != seg && l.first_off != 0) {
		seg = l.first_seg;
		off = 0;
	}
	tdo_log(TDO_LOG_ERROR, "recovery",
	        "the log is damaged at segment %u offset %u: batch %llu fails its checks, and %llu later "
	        "batches follow (the first, batch %llu, at segment %u offset %u); the device is not opened, "
	        "so that they are not cut off, and nothing was written to it",
	        seg, off, (unsigned long long)seq, (unsigned long long)l.n, (unsigned long long)l.first_seq,
	        l.first_seg, l.first_off);
	if (dmg) {
		dmg->seg = seg;
		dmg->off = off;
		dmg->seq = seq;
		dmg->later = l.n;
		dmg->first_seq = l.first_seq;
		dmg->first_seg = l.first_seg;
		dmg->first_off = l.first_off;
	}
	return TDO_ELOGDAMAGED;
}

int rcv_replay(struct tdo_engine *e, uint64_t seq, uint32_t seg, uint32_t off, struct rcv_damage *dmg)
{
	uint32_t cap = TDO_BLOCK_SIZE, pcap = 0, pseg = 0, poff = 0;
	uint8_t *buf = dev_alloc(cap), *prev = NULL;
	struct firsts f = { NULL, NULL };
	bool have_prev = false, torn = false;
	int err = 0;

	if (!buf)
		return -ENOMEM;
	/* a batch is applied once the next one is found (so it was complete
	 * before the next was written); the last one only if its payloads
	 * check out, since only the newest batch can be torn */
	for (;;) {
		const struct tdo_batch_hdr *h;

		if ((err = locate(e, &buf, &cap, &f, &seg, &off, seq))) {
			if (err == -EILSEQ)
				err = 0; /* the chain ends here: check_end says how */
			break;
		}
		h = (const void *)buf;
		if (have_prev && (err = apply_batch(e, prev, NULL, pseg, poff)))
			break;
		if (h->bh_hdr_len > pcap) {
			free(prev);
			prev = malloc(h->bh_hdr_len);
			pcap = prev ? h->bh_hdr_len : 0;
			if (!prev) {
				err = -ENOMEM;
				break;
			}
		}
		memcpy(prev, buf, h->bh_hdr_len);
		have_prev = true;
		pseg = seg;
		poff = off;
		off += h->bh_len;
		seq++;
	}
	if (!err && have_prev) {
		const struct tdo_batch_hdr *h = (const void *)prev;
		uint8_t *full = dev_alloc(h->bh_len);

		if (!full)
			err = -ENOMEM;
		else if (!(err = dev_pread(&e->dev, full, h->bh_len,
		                           e->sb.sb_seg_start + (uint64_t)pseg * e->sb.sb_seg_size + poff))) {
			if (memcmp(full, prev, h->bh_hdr_len) == 0 && payloads_ok(full)) {
				err = apply_batch(e, prev, full, pseg, poff);
			} else {
				/* the log ends before it, unless check_end finds more */
				seg = pseg;
				off = poff;
				seq--;
				torn = true;
			}
		}
		free(full);
	}
	if (!err)
		err = check_end(e, &f, seg, off, seq, dmg);
	free(buf);
	free(prev);
	free(f.first);
	free(f.suspect);
	if (err) {
		if (err != TDO_ELOGDAMAGED)
			tdo_log(TDO_LOG_ERROR, "recovery", "replay stopped at segment %u offset %u (batch %llu): %s",
			        seg, off, (unsigned long long)seq, tdo_strerror(err));
		return err;
	}
	if (torn)
		tdo_log(TDO_LOG_INFO, "recovery",
		        "cut torn tail: batch %llu at segment %u offset %u failed its checksums",
		        (unsigned long long)seq, seg, off);
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
