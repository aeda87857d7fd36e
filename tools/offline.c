/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the offline commands, which open a device directly: format,
 * volume create, list, resize, delete, import and export with --device,
 * inspect and check. Each runs the engine on a loop of its own and waits
 * for every callback (struct session), so a command reads as a straight
 * line; import and export keep IO_QD requests of IO_CHUNK bytes in flight.
 * The engine's exclusive lock makes a device that testudod holds refuse to
 * open (TDO_ELOCKED). This file must never get round that lock, and never
 * reach below the engine's public API (include/testudo/engine.h): nothing
 * of storage/, no on-disk struct.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testudo/engine.h"
#include "testudo/util.h"

#include "internal.h"

#define IO_CHUNK (1u << 20)
#define IO_QD    8

/* ---- running the engine from a command ---------------------------------- */

struct session {
	uv_loop_t loop;
	struct tdo_engine *e;
	int status;
	int done;
};

static int session_open(struct session *s, const char *dev)
{
	int err;

	memset(s, 0, sizeof *s);
	if (uv_loop_init(&s->loop))
		return cli_die("cannot create an event loop");
	err = tdo_engine_open(&s->loop, dev, NULL, &s->e);
	if (err) {
		uv_loop_close(&s->loop);
		return cli_die("%s: %s", dev, tdo_strerror(err));
	}
	return 0;
}

static void done_cb(void *arg, int status)
{
	struct session *s = arg;

	s->status = status;
	s->done = 1;
}

static int session_wait(struct session *s)
{
	while (!s->done)
		uv_run(&s->loop, UV_RUN_ONCE);
	s->done = 0;
	return s->status;
}

static int session_close(struct session *s)
{
	int err;

	if (tdo_engine_close(s->e, done_cb, s) == 0)
		err = session_wait(s);
	else
		err = -EALREADY;
	uv_run(&s->loop, UV_RUN_DEFAULT);
	uv_loop_close(&s->loop);
	if (err)
		return cli_die("closing the device: %s", tdo_strerror(err));
	return 0;
}

/* ---- format ------------------------------------------------------------- */

/* A progress line on a terminal, redrawn at most 5 times a second. */
struct progress {
	const char *what;
	bool tty;
	bool printed;
	uint64_t t0, last_print, shown;  /* SHOWN: done, as last drawn */
};

static void progress_init(struct progress *p, const char *what)
{
	p->what = what;
	p->tty = isatty(STDERR_FILENO);
	p->printed = false;
	p->t0 = tdo_now_usec();
	p->last_print = 0;
	p->shown = 0;
}

/* FINAL: the last one, drawn whatever the time, and the line ended. */
static void progress_show(struct progress *p, uint64_t done, uint64_t total, bool final)
{
	uint64_t now = tdo_now_usec();
	char a[32], b[32];

	if (!p->tty || (!final && done < total && now - p->last_print < 200000))
		return;
	if (p->printed && done == p->shown)
		goto end; /* already on the screen */
	p->last_print = now;
	p->printed = true;
	p->shown = done;
	fprintf(stderr, "\r%s %s of %s (%3.0f%%) %.1f MiB/s   ", p->what,
	        tdo_format_size(done, a, sizeof a), tdo_format_size(total, b, sizeof b),
	        total ? 100.0 * (double)done / (double)total : 100.0,
	        (double)done / 1048576.0 / ((double)(now - p->t0 + 1) / 1e6));
end:
	if (final)
		fputc('\n', stderr);
}

static void format_progress(void *arg, uint64_t done, uint64_t total)
{
	progress_show(arg, done, total, false);
}

int offline_format(int argc, char **argv)
{
	struct tdo_format_opts o = { 0 };
	struct progress fp;
	const char *path = NULL;
	char a[32], b[32], c[32];
	int err;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--size") && i + 1 < argc) {
			if (cli_parse_size("size", argv[++i], &o.size))
				return 1;
		} else if (!strcmp(argv[i], "--segment-size") && i + 1 < argc) {
			if (cli_parse_size("segment size", argv[++i], &o.seg_size))
				return 1;
		} else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "file"))
				o.backend = TDO_BACKEND_FILE;
			else if (!strcmp(argv[i], "pmem"))
				o.backend = TDO_BACKEND_PMEM;
			else
				return cli_die("unknown backend '%s' (file or pmem)", argv[i]);
		} else if (!strcmp(argv[i], "--force")) {
			o.force = 1;
		} else if (!strcmp(argv[i], "--sparse")) {
			o.sparse = 1;
		} else if (argv[i][0] == '-') {
			return cli_die("format: unknown option '%s'", argv[i]);
		} else if (!path) {
			path = argv[i];
		} else {
			return cli_die("format: unexpected argument '%s'", argv[i]);
		}
	}
	if (!path)
		return cli_die("format: which device? (testudo format PATH [--size SIZE])");
	if (o.seg_size && (o.seg_size < (1u << 20) || o.seg_size % (1u << 20) || o.seg_size > (1ull << 31)))
		return cli_die("segment size must be a multiple of 1 MiB between 1 MiB and 2 GiB");
	progress_init(&fp, "writing zeros into the file's holes:");
	o.progress = format_progress;
	o.progress_arg = &fp;
	err = tdo_format(path, &o);
	if (fp.printed)
		fputc('\n', stderr);
	if (err == -ENOENT)
		return cli_die("%s does not exist; give --size to create it", path);
	if (err == -ENOSPC || err == -EDQUOT)
		return cli_die("%s: the file system has no room to write the device's %s of zeros (or give --sparse)",
		           path, tdo_format_size(o.size, a, sizeof a));
	if (err == TDO_ETOOSMALL)
		return cli_die("%s: too small (at least 8 segments of %s and the checkpoint areas are needed)",
		           path, tdo_format_size(o.seg_size ? o.seg_size : 4u << 20, a, sizeof a));
	if (err == -EINVAL)
		return cli_die("%s: invalid format options (a block device's size cannot be changed with --size)", path);
	if (err)
		return cli_die("%s: %s", path, tdo_strerror(err));
	{
		struct session s;
		struct tdo_engine_stats st;
		if (session_open(&s, path))
			return 1;
		tdo_engine_stats(s.e, &st);
		printf("formatted %s: %s, %u segments of %s, room for %s of volumes\n", path,
		       tdo_format_size(st.dev_size, a, sizeof a), st.seg_count,
		       tdo_format_size(st.seg_size, b, sizeof b),
		       tdo_format_size(st.capacity, c, sizeof c));
		return session_close(&s);
	}
}

/* ---- volumes ------------------------------------------------------------ */

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			putchar('\\');
		putchar(*s);
	}
	putchar('"');
}

static int vol_err(const char *name, int err)
{
	if (err == TDO_ENOVOL)
		return cli_die("no volume named '%s'", name);
	if (err == TDO_EVOLEXIST)
		return cli_die("a volume named '%s' already exists", name);
	if (err == -EINVAL)
		return cli_die("invalid volume name or size for '%s' (names: 1-63 of A-Z a-z 0-9 . _ -; sizes: multiples of 512)", name);
	return cli_die("volume '%s': %s", name, tdo_strerror(err));
}

/* The end of a volume operation on S that ERR says was started (0) or
 * refused: 0, or 1 after vol_err()'s line. */
static int vol_op_end(struct session *s, const char *name, int err)
{
	if (!err)
		err = session_wait(s);
	return err ? vol_err(name, err) : 0;
}

struct xfer {
	struct session *s;
	uint32_t vol;
	int fd;
	uint64_t size, next, done;
	int inflight, err;
	bool import;
	struct progress prog;
	struct slot { uint8_t *buf; uint64_t off; uint32_t len; struct xfer *x; } slots[IO_QD];
};

static void xfer_progress(struct xfer *x, bool final)
{
	progress_show(&x->prog, x->done, x->size, final);
}

static void xfer_next(struct slot *sl);

static void xfer_done(void *arg, int status)
{
	struct slot *sl = arg;
	struct xfer *x = sl->x;

	x->inflight--;
	if (status && !x->err)
		x->err = status;
	if (!status && !x->import) {
		if (pwrite(x->fd, sl->buf, sl->len, (off_t)sl->off) != (ssize_t)sl->len && !x->err)
			x->err = -errno ? -errno : -EIO;
	}
	x->done += sl->len;
	xfer_progress(x, false);
	if (!x->err)
		xfer_next(sl);
	if (x->inflight == 0 && (x->next >= x->size || x->err))
		done_cb(x->s, x->err);
}

static void xfer_next(struct slot *sl)
{
	struct xfer *x = sl->x;
	uint32_t len;
	int err;

	if (x->next >= x->size)
		return;
	len = x->size - x->next < IO_CHUNK ? (uint32_t)(x->size - x->next) : IO_CHUNK;
	sl->off = x->next;
	sl->len = len;
	x->next += len;
	if (x->import) {
		ssize_t r = pread(x->fd, sl->buf, len, (off_t)sl->off);
		if (r < 0) {
			x->err = -errno;
			return;
		}
		if ((size_t)r < len)
			memset(sl->buf + r, 0, len - (size_t)r);
		/* the engine takes whole sectors: pad a short tail with zeroes */
		len = (uint32_t)((len + TDO_SECTOR_SIZE - 1) / TDO_SECTOR_SIZE * TDO_SECTOR_SIZE);
		err = tdo_engine_write(x->s->e, x->vol, sl->off, len, sl->buf, xfer_done, sl);
	} else {
		err = tdo_engine_read(x->s->e, x->vol, sl->off, len, sl->buf, xfer_done, sl);
	}
	if (err) {
		x->err = err;
		return;
	}
	x->inflight++;
}

static int cmd_transfer(struct session *s, const char *name, const char *file, bool import)
{
	struct tdo_vol_info vi;
	struct xfer x;
	struct stat st;
	int err;

	err = tdo_vol_lookup(s->e, name, &vi);
	if (err)
		return vol_err(name, err);
	memset(&x, 0, sizeof x);
	x.s = s;
	x.vol = vi.id;
	x.import = import;
	progress_init(&x.prog, import ? "imported" : "exported");
	x.fd = import ? open(file, O_RDONLY | O_CLOEXEC) : open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (x.fd < 0)
		return cli_die("%s: %s", file, strerror(errno));
	if (import) {
		if (fstat(x.fd, &st) < 0) {
			close(x.fd);
			return cli_die("%s: %s", file, strerror(errno));
		}
		if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
			close(x.fd);
			return cli_die("%s: import needs a regular file or block device (it reads at offsets)", file);
		}
		x.size = (uint64_t)st.st_size;
		if (x.size > vi.size) {
			close(x.fd);
			return cli_die("%s is %" PRIu64 " bytes, larger than volume '%s' (%" PRIu64 " bytes)",
			           file, x.size, name, vi.size);
		}
	} else {
		x.size = vi.size;
		if (ftruncate(x.fd, (off_t)x.size) < 0) {
			close(x.fd);
			return cli_die("%s: %s", file, strerror(errno));
		}
	}
	for (int i = 0; i < IO_QD; i++) {
		if (posix_memalign((void **)&x.slots[i].buf, TDO_BLOCK_SIZE, IO_CHUNK)) {
			close(x.fd);
			return cli_die("out of memory");
		}
		x.slots[i].x = &x;
	}
	for (int i = 0; i < IO_QD; i++)
		xfer_next(&x.slots[i]);
	if (x.inflight)
		err = session_wait(s);
	else
		err = x.err;
	xfer_progress(&x, true);
	if (!err && !import && fsync(x.fd) < 0)
		err = -errno;
	close(x.fd);
	for (int i = 0; i < IO_QD; i++)
		free(x.slots[i].buf);
	if (err)
		return cli_die("%s '%s': %s", import ? "import into" : "export of", name, tdo_strerror(err));
	printf("%s %" PRIu64 " bytes %s volume %s\n", import ? "imported" : "exported", x.size,
	       import ? "into" : "from", name);
	return 0;
}

int offline_volume(const char *dev, int argc, char **argv)
{
	struct session s;
	const char *sub;
	bool json = false;
	int rc = 0;

	if (argc < 1)
		return cli_die("volume: which command? (create, list, resize, delete, import, export)");
	sub = argv[0];
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--json"))
			json = true;

	if (!strcmp(sub, "create")) {
		uint64_t size;
		uint32_t flags = 0;
		if (argc < 3)
			return cli_die("usage: testudo --device PATH volume create NAME SIZE [--compress lz4]");
		for (int i = 3; i < argc; i++) {
			if (!strcmp(argv[i], "--compress") && i + 1 < argc) {
				if (strcmp(argv[++i], "lz4"))
					return cli_die("unknown compression '%s' (lz4)", argv[i]);
				flags |= TDO_VOL_LZ4;
			} else if (strcmp(argv[i], "--json")) {
				return cli_die("volume create: unknown option '%s'", argv[i]);
			}
		}
		if (cli_parse_vol_size(argv[2], &size))
			return 1;
		if (session_open(&s, dev))
			return 1;
		rc = vol_op_end(&s, argv[1], tdo_vol_create(s.e, argv[1], size, flags, done_cb, &s));
		if (!rc)
			printf("created volume %s (%" PRIu64 " bytes%s)\n", argv[1], size, flags ? ", lz4" : "");
	} else if (!strcmp(sub, "list")) {
		struct tdo_vol_info *vi;
		int n;
		char a[32], b[32];
		if (session_open(&s, dev))
			return 1;
		vi = calloc(TDO_MAX_VOLS, sizeof *vi);
		n = vi ? tdo_vol_list(s.e, vi, TDO_MAX_VOLS) : 0;
		if (json) {
			printf("[");
			for (int i = 0; i < n; i++) {
				printf("%s{\"name\":", i ? "," : "");
				json_str(vi[i].name);
				printf(",\"id\":%u,\"size\":%" PRIu64 ",\"compress\":\"%s\",\"used\":%" PRIu64
				       ",\"lsn\":%" PRIu64 ",\"epoch\":%u}",
				       vi[i].id, vi[i].size, vi[i].flags & TDO_VOL_LZ4 ? "lz4" : "none",
				       vi[i].used_bytes, vi[i].lsn, vi[i].epoch);
			}
			printf("]\n");
		} else {
			printf("%-24s %14s %10s %6s %12s\n", "NAME", "SIZE", "USED", "LZ4", "LSN");
			for (int i = 0; i < n; i++)
				printf("%-24s %14s %10s %6s %12" PRIu64 "\n", vi[i].name,
				       tdo_format_size(vi[i].size, a, sizeof a),
				       tdo_format_size(vi[i].used_bytes, b, sizeof b),
				       vi[i].flags & TDO_VOL_LZ4 ? "yes" : "no", vi[i].lsn);
		}
		free(vi);
	} else if (!strcmp(sub, "resize")) {
		uint64_t size;
		if (argc != 3)
			return cli_die("usage: testudo --device PATH volume resize NAME SIZE");
		if (cli_parse_vol_size(argv[2], &size))
			return 1;
		if (session_open(&s, dev))
			return 1;
		rc = vol_op_end(&s, argv[1], tdo_vol_resize(s.e, argv[1], size, done_cb, &s));
		if (!rc)
			printf("resized volume %s to %" PRIu64 " bytes\n", argv[1], size);
	} else if (!strcmp(sub, "delete")) {
		if (argc != 2)
			return cli_die("usage: testudo --device PATH volume delete NAME");
		if (session_open(&s, dev))
			return 1;
		rc = vol_op_end(&s, argv[1], tdo_vol_delete(s.e, argv[1], done_cb, &s));
		if (!rc)
			printf("deleted volume %s\n", argv[1]);
	} else if (!strcmp(sub, "import") || !strcmp(sub, "export")) {
		if (argc != 3)
			return cli_die("usage: testudo --device PATH volume %s NAME FILE", sub);
		if (session_open(&s, dev))
			return 1;
		rc = cmd_transfer(&s, argv[1], argv[2], !strcmp(sub, "import"));
	} else {
		return cli_die("unknown volume command '%s' (create, list, resize, delete, import, export)", sub);
	}
	if (session_close(&s) && !rc)
		rc = 1;
	return rc;
}

/* ---- inspect and check ---------------------------------------------------- */

int offline_inspect(const char *cmd, const char *dev, int argc, char **argv)
{
	const char *path = argc > 0 && argv[0][0] != '-' ? argv[0] : dev;
	bool json = false;
	int r;

	for (int k = 0; k < argc; k++)
		if (!strcmp(argv[k], "--json"))
			json = true;
	if (!path)
		return cli_die("%s: which device? (testudo %s PATH)", cmd, cmd);
	r = !strcmp(cmd, "inspect") ? tdo_inspect(path, stdout, json) : tdo_check(path, stdout);
	if (r < 0)
		return cli_die("%s: %s", path, tdo_strerror(r)) + 1;
	return r;
}
