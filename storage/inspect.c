/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: inspect and check, the offline views of a device. Both open the
 * engine (so a device a daemon holds is refused by the lock) and then look
 * at it synchronously: there is no loop work to overlap with.
 *
 * check walks every segment in use, verifies each batch's header area,
 * and for each record the index names verifies the payload against the
 * record's checksum and the index's; then it makes sure every index entry
 * was matched by a record. A log damaged before later batches, which the
 * engine refuses to open, it reports with recovery's finding of the place.
 * It reports, it never repairs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *seg_state_name(const struct seg *s)
{
	switch (s->state) {
	case SEG_FREE: return "free";
	case SEG_OPEN: return "open";
	case SEG_SEALED: return "sealed";
	default: return "freeing";
	}
}

static void close_cb(void *arg, int status)
{
	*(int *)arg = status ? status : 1;
}

static int open_offline(const char *path, uv_loop_t *loop, struct tdo_engine **e,
                        struct rcv_damage *dmg)
{
	struct tdo_open_opts o = { 0 };

	o.no_cleaner = 1;
	if (uv_loop_init(loop))
		return -ENOMEM;
	return eng_open(loop, path, &o, e, dmg);
}

static int close_offline(uv_loop_t *loop, struct tdo_engine *e)
{
	int done = 0;

	tdo_engine_close(e, close_cb, &done);
	while (!done)
		uv_run(loop, UV_RUN_ONCE);
	uv_loop_close(loop);
	return done == 1 ? 0 : done;
}

int tdo_inspect(const char *path, FILE *out, int json)
{
	struct tdo_engine_stats st;
	struct tdo_engine *e;
	uv_loop_t loop;
	char u[40], a[32], b[32], cs[32];
	int err = open_offline(path, &loop, &e, NULL);

	if (err) {
		uv_loop_close(&loop);
		return err;
	}
	tdo_engine_stats(e, &st);
	for (int i = 0; i < 16; i++)
		sprintf(u + i * 2 + (i >= 4) + (i >= 6) + (i >= 8) + (i >= 10), "%02x", e->sb.sb_uuid[i]);
	u[8] = u[13] = u[18] = u[23] = '-';
	if (json) {
		fprintf(out, "{\"superblock\":{\"uuid\":\"%s\",\"version\":%u,\"backend\":\"%s\","
		        "\"device_size\":%" PRIu64 ",\"segment_size\":%" PRIu64 ",\"segment_count\":%u,"
		        "\"segment_start\":%" PRIu64 ",\"checkpoint_area_size\":%" PRIu64 "},",
		        u, e->sb.sb_version, e->sb.sb_backend == TDO_BACKEND_PMEM ? "pmem" : "file",
		        e->sb.sb_dev_size, e->sb.sb_seg_size, e->sb.sb_seg_count, e->sb.sb_seg_start,
		        e->sb.sb_ckpt_size);
		fprintf(out, "\"checkpoint\":{\"seq\":%" PRIu64 ",\"log_segment\":%u,\"log_offset\":%u,"
		        "\"log_seq\":%" PRIu64 "},", e->ckpt_seq, e->applied_seg, e->applied_off, e->applied_seq);
		fprintf(out, "\"usage\":{\"capacity\":%" PRIu64 ",\"volume_bytes\":%" PRIu64 ",\"live_bytes\":%" PRIu64
		        ",\"segments_free\":%u,\"segments_used\":%u,\"user_bytes\":%" PRIu64
		        ",\"cleaner_bytes\":%" PRIu64 ",\"log_bytes\":%" PRIu64 "},",
		        st.capacity, st.vol_bytes, st.live_bytes, st.seg_free, st.seg_used, st.user_bytes,
		        st.clean_bytes, st.log_bytes);
		fprintf(out, "\"volumes\":[");
		for (uint32_t i = 0; i < e->nvols; i++) {
			struct vol *v = e->vols[i];
			fprintf(out, "%s{\"id\":%u,\"name\":\"%s\",\"size\":%" PRIu64 ",\"compress\":\"%s\","
			        "\"lsn\":%" PRIu64 ",\"epoch\":%u,\"used_bytes\":%" PRIu64 "}",
			        i ? "," : "", v->d.vd_id, v->d.vd_name, v->d.vd_size,
			        v->d.vd_flags & TDO_VOL_LZ4 ? "lz4" : "none", v->d.vd_lsn, v->d.vd_epoch, v->live);
		}
		fprintf(out, "],\"segments\":[");
		for (uint32_t i = 0; i < e->sb.sb_seg_count; i++)
			fprintf(out, "%s{\"state\":\"%s\",\"live\":%" PRIu64 ",\"age\":%" PRIu64 "}", i ? "," : "",
			        seg_state_name(&e->segs[i]), e->segs[i].live, e->segs[i].age);
		fprintf(out, "]}\n");
	} else {
		fprintf(out, "superblock\n  uuid            %s\n  version         %u\n  backend         %s\n"
		        "  device size     %s\n  segments        %u x %s from byte %" PRIu64 "\n"
		        "  checkpoint area 2 x %s\n",
		        u, e->sb.sb_version, e->sb.sb_backend == TDO_BACKEND_PMEM ? "pmem" : "file",
		        tdo_format_size(e->sb.sb_dev_size, a, sizeof a), e->sb.sb_seg_count,
		        tdo_format_size(e->sb.sb_seg_size, b, sizeof b), e->sb.sb_seg_start,
		        tdo_format_size(e->sb.sb_ckpt_size, cs, sizeof cs));
		fprintf(out, "checkpoint\n  seq             %" PRIu64 "\n  log position    segment %u offset %u (batch seq %" PRIu64 ")\n",
		        e->ckpt_seq, e->applied_seg, e->applied_off, e->applied_seq);
		fprintf(out, "usage\n  capacity        %s\n", tdo_format_size(st.capacity, a, sizeof a));
		fprintf(out, "  volumes         %s\n", tdo_format_size(st.vol_bytes, a, sizeof a));
		fprintf(out, "  live data       %s\n", tdo_format_size(st.live_bytes, a, sizeof a));
		fprintf(out, "  segments        %u used, %u free\n", st.seg_used, st.seg_free);
		if (st.user_bytes)
			fprintf(out, "  write amp.      %.2f (user %s, cleaner %s)\n",
			        (double)(st.user_bytes + st.clean_bytes) / (double)st.user_bytes,
			        tdo_format_size(st.user_bytes, a, sizeof a), tdo_format_size(st.clean_bytes, b, sizeof b));
		fprintf(out, "volumes (%u)\n", e->nvols);
		for (uint32_t i = 0; i < e->nvols; i++) {
			struct vol *v = e->vols[i];
			fprintf(out, "  %-20s id %-4u %10s  lz4 %-3s  lsn %-10" PRIu64 " epoch %-3u used %s\n",
			        v->d.vd_name, v->d.vd_id, tdo_format_size(v->d.vd_size, a, sizeof a),
			        v->d.vd_flags & TDO_VOL_LZ4 ? "yes" : "no", v->d.vd_lsn, v->d.vd_epoch,
			        tdo_format_size(v->live, b, sizeof b));
		}
		fprintf(out, "segments (state live%%)\n");
		for (uint32_t i = 0; i < e->sb.sb_seg_count; i++) {
			fprintf(out, "%s%4u %-7s %3u%%", i % 6 == 0 ? "  " : "  ", i, seg_state_name(&e->segs[i]),
			        (unsigned)(e->segs[i].live * 100 / e->sb.sb_seg_size));
			if (i % 6 == 5 || i + 1 == e->sb.sb_seg_count)
				fprintf(out, "\n");
		}
	}
	return close_offline(&loop, e);
}

/* ---- check -------------------------------------------------------------- */

struct seen {
	uint8_t *bits;              /* one per device sector that starts a payload */
	uint64_t nsect;
};

static void seen_set(struct seen *s, uint64_t sector)
{
	if (sector < s->nsect)
		s->bits[sector / 8] |= (uint8_t)(1u << (sector % 8));
}

static bool seen_get(const struct seen *s, uint64_t sector)
{
	return sector < s->nsect && (s->bits[sector / 8] >> (sector % 8)) & 1;
}

struct check_ctx {
	struct tdo_engine *e;
	FILE *out;
	struct seen seen;
	struct vol *v;
	uint64_t problems, entries;
};

static int check_entry(void *arg, uint64_t b, struct tdo_ie ie)
{
	struct check_ctx *c = arg;

	if (!ie_has_payload(ie))
		return 0;
	c->entries++;
	if (!seen_get(&c->seen, ie_sector(ie))) {
		uint64_t s = eng_sector_to_seg(c->e, ie_sector(ie));
		fprintf(c->out, "damaged: volume %s block %" PRIu64 ": index names device byte %" PRIu64
		        " (segment %" PRIu64 ") but no valid record is there\n",
		        c->v->d.vd_name, b, ie_sector(ie) * TDO_SECTOR_SIZE, s);
		c->problems++;
	}
	return 0;
}

int tdo_check(const char *path, FILE *out)
{
	struct check_ctx c = { 0 };
	struct rcv_damage dmg;
	struct tdo_engine *e;
	uv_loop_t loop;
	uint8_t *buf;
	uint64_t records = 0;
	int err = open_offline(path, &loop, &e, &dmg);

	if (err) {
		uv_loop_close(&loop);
		if (err != TDO_ELOGDAMAGED)
			return err;
		fprintf(out, "damaged: the log at segment %u offset %u: batch %" PRIu64 " fails its checks, and %" PRIu64
		        " later batches follow it (the first, batch %" PRIu64 ", at segment %u offset %u)\n",
		        dmg.seg, dmg.off, dmg.seq, dmg.later, dmg.first_seq, dmg.first_seg, dmg.first_off);
		fprintf(out, "log damaged before later batches: DAMAGED (1 problems); the engine will not open the device, "
		        "and nothing was written to it\n");
		return 1;
	}
	c.e = e;
	c.out = out;
	c.seen.nsect = e->sb.sb_dev_size / TDO_SECTOR_SIZE;
	c.seen.bits = calloc(c.seen.nsect / 8 + 1, 1);
	buf = dev_alloc(e->sb.sb_seg_size);
	if (!c.seen.bits || !buf) {
		free(c.seen.bits);
		free(buf);
		close_offline(&loop, e);
		return -ENOMEM;
	}
	for (uint32_t s = 0; s < e->sb.sb_seg_count; s++) {
		uint64_t base = e->sb.sb_seg_start + (uint64_t)s * e->sb.sb_seg_size;
		uint64_t end = s == e->head_seg ? e->head_off : e->sb.sb_seg_size, prev_seq = 0;
		uint32_t off = 0;

		if (e->segs[s].state == SEG_FREE || (e->segs[s].live == 0 && s != e->head_seg))
			continue;
		err = dev_pread(&e->dev, buf, e->sb.sb_seg_size, base);
		if (err) {
			fprintf(out, "damaged: segment %u: read failed: %s\n", s, tdo_strerror(err));
			c.problems++;
			continue;
		}
		while (off + TDO_BLOCK_SIZE <= end) {
			const struct tdo_batch_hdr *bh = (const void *)(buf + off);
			const struct tdo_rec_hdr *r = (const void *)(bh + 1);

			/* the segment's batches since it was last opened have
			 * rising seqs; a lower one is left from before, and the
			 * head segment holds the log only up to the head (a torn
			 * tail recovery cut may lie after it) */
			if (batch_check_head(bh, e->sb.sb_uuid, 0, e->sb.sb_seg_size - off) || bh->bh_seq <= prev_seq)
				break; /* end of what this segment holds */
			prev_seq = bh->bh_seq;
			if (batch_check_area(bh)) {
				fprintf(out, "damaged: segment %u offset %u: batch %" PRIu64 " header area fails its checksum\n",
				        s, off, bh->bh_seq);
				c.problems++;
				break;
			}
			for (uint32_t i = 0; i < bh->bh_nrec; i++) {
				uint64_t sector = (base + off + r[i].rec_poff) / TDO_SECTOR_SIZE;
				struct vol *v;
				struct tdo_ie ie;

				if (!eng_record_live(e, &r[i], sector, &v, &ie))
					continue; /* an older version: dead */
				records++;
				seen_set(&c.seen, sector);
				if (tdo_csum(buf + off + r[i].rec_poff, r[i].rec_plen) != r[i].rec_pcsum ||
				    (uint32_t)r[i].rec_pcsum != ie.ie_c) {
					fprintf(out, "damaged: volume %s block %" PRIu64 ": payload checksum mismatch at segment %u offset %u (device byte %" PRIu64 ")\n",
					        v->d.vd_name, r[i].rec_block, s, off + r[i].rec_poff,
					        base + off + r[i].rec_poff);
					c.problems++;
				}
			}
			off += bh->bh_len;
		}
	}
	for (uint32_t i = 0; i < e->nvols; i++) {
		c.v = e->vols[i];
		idx_walk(&e->vols[i]->idx, check_entry, &c);
	}
	fprintf(out, "checked %" PRIu64 " live records and %" PRIu64 " index entries in %u volumes: %s (%" PRIu64 " problems)\n",
	        records, c.entries, e->nvols, c.problems ? "DAMAGED" : "clean", c.problems);
	free(c.seen.bits);
	free(buf);
	err = close_offline(&loop, e);
	if (err)
		return err;
	return c.problems ? 1 : 0;
}
