/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The witness. DESIGN: every block the bench writes under --verify says
 * where it belongs, who wrote it and which write it was, with a checksum
 * over all of it (include/testudo/bench.h); the bench remembers, per
 * block, the newest write the server acknowledged, and appends each
 * acknowledged write to the journal. A read is then judged on its own
 * content: the newest acknowledged write or a newer one of ours is good,
 * anything else is a finding. The journal is written with write() at
 * least once per loop iteration (it survives the bench being killed) and
 * fdatasync'd in the thread pool about once a second and at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "testudo/util.h"

const char *const tb_bad_name[TB_NBAD] = {
	[TB_OK] = "ok", [TB_STALE] = "stale", [TB_MISSING] = "missing", [TB_CORRUPT] = "corrupt",
	[TB_MISPLACED] = "misplaced", [TB_FOREIGN] = "foreign", [TB_RESURRECTED] = "resurrected",
};

#define BODY (TDO_VBLK_SIZE - sizeof(struct tdo_vblk))

static inline uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t vblk_sum(const unsigned char *b)
{
	return tdo_csum_two(b, 32, b + sizeof(struct tdo_vblk), BODY);
}

void tb_vblk_fill(void *buf, uint32_t len, uint64_t off, uint64_t writer, uint64_t seq)
{
	unsigned char *b = buf;
	for (uint32_t done = 0; done < len; done += TDO_VBLK_SIZE, b += TDO_VBLK_SIZE) {
		struct tdo_vblk h = { TDO_VBLK_MAGIC, off + done, writer, seq, 0 };
		uint64_t s = writer ^ (seq * 0x100000001b3ull) ^ ((off + done) << 1);
		uint64_t *w = (uint64_t *)(void *)(b + sizeof(h));
		for (size_t i = 0; i < BODY / 8; i++)
			w[i] = splitmix(&s);
		memcpy(b, &h, sizeof(h));
		h.vb_check = vblk_sum(b);
		memcpy(b + offsetof(struct tdo_vblk, vb_check), &h.vb_check, 8);
	}
}

enum tb_bad tb_vblk_check(const void *blk, uint64_t off, uint64_t writer, uint64_t acked,
			  uint64_t *found)
{
	struct tdo_vblk h;
	memcpy(&h, blk, sizeof(h));
	*found = 0;
	bool valid = h.vb_magic == TDO_VBLK_MAGIC && h.vb_check == vblk_sum(blk);
	if (!valid) {
		/* a block of ours that fails its checksum is torn, whatever we know of it */
		if (h.vb_magic == TDO_VBLK_MAGIC && h.vb_writer == writer)
			return TB_CORRUPT;
		if (!acked)
			return TB_OK;   /* never acknowledged: may hold anything */
		const unsigned char *b = blk;
		for (size_t i = 0; i < TDO_VBLK_SIZE; i++)
			if (b[i])
				return TB_CORRUPT;
		return TB_MISSING;
	}
	if (h.vb_offset != off)
		return TB_MISPLACED;
	if (h.vb_writer == writer)
		*found = h.vb_seq;
	if (!acked)
		return TB_OK;
	if (h.vb_writer != writer)
		return TB_FOREIGN;
	return h.vb_seq < acked ? TB_STALE : TB_OK;
}

enum tb_bad tb_map_check(const struct tb_map *m, const void *blk, uint64_t off, uint64_t writer,
			 uint64_t *found)
{
	uint64_t b = (off - m->base) / TDO_VBLK_SIZE;
	enum tb_bad k = tb_vblk_check(blk, off, writer, m->acked[b], found);
	if (k == TB_STALE && m->doubt && m->doubt[b] == *found)
		return TB_RESURRECTED;
	return k;
}

/* Raise SEQS[b] to SEQ for every block of [OFF, OFF+LEN). */
static void raise_seq(const struct tb_map *m, uint64_t *seqs, uint64_t off, uint32_t len, uint64_t seq)
{
	for (uint64_t b = (off - m->base) / TDO_VBLK_SIZE; b < (off - m->base + len) / TDO_VBLK_SIZE; b++)
		if (seqs[b] < seq)
			seqs[b] = seq;
}

void tb_map_ack(struct tb_map *m, uint64_t off, uint32_t len, uint64_t seq)
{
	raise_seq(m, m->acked, off, len, seq);
}

int tb_map_doubt(struct tb_map *m, uint64_t off, uint32_t len, uint64_t seq)
{
	if (!m->doubt && !(m->doubt = calloc(m->nblocks ? m->nblocks : 1, sizeof(*m->doubt))))
		return -ENOMEM;
	raise_seq(m, m->doubt, off, len, seq);
	return 0;
}

int tb_map_init(struct tb_map *m, uint64_t base, uint64_t len)
{
	memset(m, 0, sizeof(*m));
	m->base = base;
	m->nblocks = (len + TDO_VBLK_SIZE - 1) / TDO_VBLK_SIZE;
	if (m->nblocks > (1ull << 28))
		return -EFBIG;         /* 1 TiB: 2.3 GiB of state */
	m->acked = calloc(m->nblocks ? m->nblocks : 1, sizeof(*m->acked));
	m->busy = calloc(m->nblocks ? m->nblocks : 1, 1);
	if (!m->acked || !m->busy) {
		tb_map_free(m);
		return -ENOMEM;
	}
	return 0;
}

void tb_map_free(struct tb_map *m)
{
	free(m->acked);
	free(m->busy);
	free(m->doubt);
	m->acked = NULL;
	m->busy = NULL;
	m->doubt = NULL;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

int tb_journal_create(struct tb_journal *j, const char *path, uint64_t writer,
		      uint64_t export_size, const char *export_name)
{
	memset(j, 0, sizeof(*j));
	j->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (j->fd < 0)
		return -errno;
	j->writer = writer;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tdo_bj_header h = {
		.jh_magic = TDO_BJ_MAGIC, .jh_version = TDO_BJ_VERSION, .jh_block = TDO_VBLK_SIZE,
		.jh_writer = writer, .jh_export_size = export_size,
		.jh_created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec,
	};
	memcpy(h.jh_export, export_name, strnlen(export_name, sizeof(h.jh_export)));
	h.jh_check = tdo_csum(&h, offsetof(struct tdo_bj_header, jh_check));
	int rc = write_all(j->fd, &h, sizeof(h));
	if (!rc && fdatasync(j->fd) < 0)
		rc = -errno;
	if (rc) {
		close(j->fd);
		j->fd = -1;
	}
	return rc;
}

void tb_journal_add(struct tb_journal *j, uint64_t off, uint32_t len, uint64_t seq)
{
	if (j->len + sizeof(struct tdo_bj_rec) > j->cap) {
		size_t cap = j->cap ? j->cap * 2 : 64 * 1024;
		char *nb = realloc(j->buf, cap);
		if (!nb) {
			/* cannot buffer: write what we have, then there is room */
			tb_journal_write(j);
			if (j->len + sizeof(struct tdo_bj_rec) > j->cap) {
				fprintf(stderr, "testudo-bench: out of memory for the journal\n");
				exit(2);
			}
		} else {
			j->buf = nb;
			j->cap = cap;
		}
	}
	struct tdo_bj_rec r = { .jr_offset = off, .jr_seq = seq, .jr_length = len };
	r.jr_check = (uint32_t)tdo_csum(&r, offsetof(struct tdo_bj_rec, jr_check));
	memcpy(j->buf + j->len, &r, sizeof(r));
	j->len += sizeof(r);
	j->records++;
}

int tb_journal_write(struct tb_journal *j)
{
	if (!j->len)
		return 0;
	int rc = write_all(j->fd, j->buf, j->len);
	if (rc) {
		fprintf(stderr, "testudo-bench: journal write failed: %s\n", strerror(-rc));
		exit(2);      /* a witness that cannot record is no witness */
	}
	j->len = 0;
	return 0;
}

static void sync_cb(uv_fs_t *req)
{
	struct tb_journal *j = req->data;
	if (req->result < 0) {
		fprintf(stderr, "testudo-bench: journal fdatasync failed: %s\n", uv_strerror((int)req->result));
		exit(2);
	}
	uv_fs_req_cleanup(req);
	j->syncing = false;
}

void tb_journal_sync_async(struct tb_journal *j, uv_loop_t *loop)
{
	tb_journal_write(j);
	if (j->syncing)
		return;
	j->syncing = true;
	j->sync_req.data = j;
	uv_fs_fdatasync(loop, &j->sync_req, j->fd, sync_cb);
}

int tb_journal_close(struct tb_journal *j)
{
	tb_journal_write(j);
	int rc = fdatasync(j->fd) < 0 ? -errno : 0;
	close(j->fd);
	j->fd = -1;
	free(j->buf);
	j->buf = NULL;
	return rc;
}

static bool rec_valid(const struct tdo_bj_rec *p)
{
	struct tdo_bj_rec x;
	memcpy(&x, p, sizeof(x));
	uint32_t len = x.jr_length & ~TDO_BJ_IN_DOUBT;
	return x.jr_check == (uint32_t)tdo_csum(&x, offsetof(struct tdo_bj_rec, jr_check)) &&
	       !(x.jr_offset % TDO_VBLK_SIZE) && !(len % TDO_VBLK_SIZE) && len &&
	       x.jr_offset <= UINT64_MAX - len && x.jr_seq;
}

int tb_journal_load(const char *path, struct tb_map *m, uint64_t *writer, uint64_t *records,
		    uint64_t *in_doubt, uint64_t *tail_bytes, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	struct stat st;
	char *buf = NULL;
	int rc = 0;
	if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(struct tdo_bj_header)) {
		snprintf(err, errlen, "%s: too short to be a journal", path);
		rc = -EINVAL;
		goto out;
	}
	size_t size = (size_t)st.st_size;
	buf = malloc(size);
	if (!buf) {
		rc = -ENOMEM;
		snprintf(err, errlen, "%s: %zu bytes: out of memory", path, size);
		goto out;
	}
	for (size_t got = 0; got < size;) {
		ssize_t r = pread(fd, buf + got, size - got, (off_t)got);
		if (r <= 0) {
			rc = r < 0 ? -errno : -EIO;
			snprintf(err, errlen, "%s: read: %s", path, strerror(-rc));
			goto out;
		}
		got += (size_t)r;
	}
	struct tdo_bj_header h;
	memcpy(&h, buf, sizeof(h));
	if (h.jh_magic != TDO_BJ_MAGIC || h.jh_check != tdo_csum(&h, offsetof(struct tdo_bj_header, jh_check))) {
		snprintf(err, errlen, "%s: not a testudo-bench journal (bad magic or checksum)", path);
		rc = -EINVAL;
		goto out;
	}
	if (h.jh_version != TDO_BJ_VERSION || h.jh_block != TDO_VBLK_SIZE) {
		snprintf(err, errlen, "%s: journal version %u, block %u: not supported", path,
			 h.jh_version, h.jh_block);
		rc = -EINVAL;
		goto out;
	}
	*writer = h.jh_writer;
	*in_doubt = 0;
	/* pass 1: validate and find the extent; pass 2: fill the map */
	size_t nrec = (size - sizeof(h)) / sizeof(struct tdo_bj_rec), good = 0;
	uint64_t end = 0;
	const struct tdo_bj_rec *r = (const void *)(buf + sizeof(h));
	for (; good < nrec; good++) {
		if (!rec_valid(&r[good]))
			break;
		struct tdo_bj_rec x;
		memcpy(&x, &r[good], sizeof(x));
		uint32_t len = x.jr_length & ~TDO_BJ_IN_DOUBT;
		if (x.jr_offset + len > end)
			end = x.jr_offset + len;
	}
	/* a damaged tail (a crash mid-append) is ignored; damage followed by
	 * valid records is not a tail */
	for (size_t k = good + 1; k < nrec; k++)
		if (rec_valid(&r[k])) {
			snprintf(err, errlen, "%s: record %zu of %zu is damaged, and valid records follow it",
				 path, good + 1, nrec);
			rc = -EINVAL;
			goto out;
		}
	*records = good;
	*tail_bytes = size - sizeof(h) - good * sizeof(struct tdo_bj_rec);
	if ((rc = tb_map_init(m, 0, end))) {
		snprintf(err, errlen, "%s: %s", path, rc == -EFBIG ? "range too large to verify" : strerror(-rc));
		goto out;
	}
	for (size_t i = 0; i < good; i++) {
		struct tdo_bj_rec x;
		memcpy(&x, &r[i], sizeof(x));
		if (x.jr_length & TDO_BJ_IN_DOUBT) {
			(*in_doubt)++;
			if ((rc = tb_map_doubt(m, x.jr_offset, x.jr_length & ~TDO_BJ_IN_DOUBT, x.jr_seq))) {
				snprintf(err, errlen, "%s: out of memory", path);
				goto out;
			}
			continue;
		}
		tb_map_ack(m, x.jr_offset, x.jr_length, x.jr_seq);
	}
out:
	free(buf);
	close(fd);
	return rc;
}
