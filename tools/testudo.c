/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testudo: the command line. This version has the offline commands, which
 * open a device directly (and so refuse one a daemon holds):
 *
 *   testudo format PATH [--size SIZE] [--backend file|pmem] [--segment-size SIZE] [--force]
 *   testudo --device PATH volume create NAME SIZE [--compress lz4]
 *   testudo --device PATH volume list [--json]
 *   testudo --device PATH volume resize NAME SIZE
 *   testudo --device PATH volume delete NAME
 *   testudo --device PATH volume import NAME FILE
 *   testudo --device PATH volume export NAME FILE
 *   testudo inspect PATH [--json]
 *   testudo check PATH
 *
 * Errors are one line on standard error and a non-zero exit status.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testudo/engine.h"
#include "testudo/util.h"

#define IO_CHUNK (1u << 20)
#define IO_QD    8

static const char *prog = "testudo";

static void usage(FILE *f)
{
	fprintf(f,
	        "usage:\n"
	        "  testudo format PATH [--size SIZE] [--backend file|pmem] [--segment-size SIZE] [--force]\n"
	        "  testudo --device PATH volume create NAME SIZE [--compress lz4]\n"
	        "  testudo --device PATH volume list [--json]\n"
	        "  testudo --device PATH volume resize NAME SIZE\n"
	        "  testudo --device PATH volume delete NAME\n"
	        "  testudo --device PATH volume import NAME FILE\n"
	        "  testudo --device PATH volume export NAME FILE\n"
	        "  testudo inspect PATH [--json]\n"
	        "  testudo check PATH\n"
	        "SIZE takes K, M, G and T suffixes (powers of 1024).\n");
}

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static int parse_size_arg(const char *what, const char *s, uint64_t *out)
{
	if (tdo_parse_size(s, out) < 0) {
		die("invalid %s '%s' (expected a number with an optional K/M/G/T suffix)", what, s);
		return -1;
	}
	return 0;
}

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
		return die("cannot create an event loop");
	err = tdo_engine_open(&s->loop, dev, NULL, &s->e);
	if (err) {
		uv_loop_close(&s->loop);
		return die("%s: %s", dev, tdo_strerror(err));
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
		return die("closing the device: %s", tdo_strerror(err));
	return 0;
}

/* ---- commands ----------------------------------------------------------- */

static int cmd_format(int argc, char **argv)
{
	struct tdo_format_opts o = { 0 };
	const char *path = NULL;
	char a[32], b[32], c[32];
	int err;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--size") && i + 1 < argc) {
			if (parse_size_arg("size", argv[++i], &o.size))
				return 1;
		} else if (!strcmp(argv[i], "--segment-size") && i + 1 < argc) {
			if (parse_size_arg("segment size", argv[++i], &o.seg_size))
				return 1;
		} else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "file"))
				o.backend = TDO_BACKEND_FILE;
			else if (!strcmp(argv[i], "pmem"))
				o.backend = TDO_BACKEND_PMEM;
			else
				return die("unknown backend '%s' (file or pmem)", argv[i]);
		} else if (!strcmp(argv[i], "--force")) {
			o.force = 1;
		} else if (argv[i][0] == '-') {
			return die("format: unknown option '%s'", argv[i]);
		} else if (!path) {
			path = argv[i];
		} else {
			return die("format: unexpected argument '%s'", argv[i]);
		}
	}
	if (!path)
		return die("format: which device? (testudo format PATH [--size SIZE])");
	if (o.seg_size && (o.seg_size < (1u << 20) || o.seg_size % (1u << 20) || o.seg_size > (1ull << 31)))
		return die("segment size must be a multiple of 1 MiB between 1 MiB and 2 GiB");
	err = tdo_format(path, &o);
	if (err == -ENOENT)
		return die("%s does not exist; give --size to create it", path);
	if (err == -ENOSPC)
		return die("%s: too small (at least 8 segments of %s and the checkpoint areas are needed)",
		           path, tdo_format_size(o.seg_size ? o.seg_size : 4u << 20, a, sizeof a));
	if (err == -EINVAL)
		return die("%s: invalid format options (a block device's size cannot be changed with --size)", path);
	if (err)
		return die("%s: %s", path, tdo_strerror(err));
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
		return die("no volume named '%s'", name);
	if (err == TDO_EVOLEXIST)
		return die("a volume named '%s' already exists", name);
	if (err == -EINVAL)
		return die("invalid volume name or size for '%s' (names: 1-63 of A-Z a-z 0-9 . _ -; sizes: multiples of 512)", name);
	return die("volume '%s': %s", name, tdo_strerror(err));
}

struct xfer {
	struct session *s;
	uint32_t vol;
	int fd;
	uint64_t size, next, done;
	int inflight, err;
	bool import;
	bool tty;
	uint64_t t0, last_print;
	struct slot { uint8_t *buf; uint64_t off; uint32_t len; struct xfer *x; } slots[IO_QD];
};

static void xfer_progress(struct xfer *x, bool final)
{
	uint64_t now = tdo_now_usec();
	char a[32], b[32];

	if (!x->tty || (!final && now - x->last_print < 200000))
		return;
	x->last_print = now;
	fprintf(stderr, "\r%s %s of %s (%3.0f%%) %.1f MiB/s   ", x->import ? "imported" : "exported",
	        tdo_format_size(x->done, a, sizeof a), tdo_format_size(x->size, b, sizeof b),
	        x->size ? 100.0 * (double)x->done / (double)x->size : 100.0,
	        (double)x->done / 1048576.0 / ((double)(now - x->t0 + 1) / 1e6));
	if (final)
		fputc('\n', stderr);
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
	x.tty = isatty(STDERR_FILENO);
	x.t0 = tdo_now_usec();
	x.fd = import ? open(file, O_RDONLY | O_CLOEXEC) : open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (x.fd < 0)
		return die("%s: %s", file, strerror(errno));
	if (import) {
		if (fstat(x.fd, &st) < 0) {
			close(x.fd);
			return die("%s: %s", file, strerror(errno));
		}
		if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
			close(x.fd);
			return die("%s: import needs a regular file or block device (it reads at offsets)", file);
		}
		x.size = (uint64_t)st.st_size;
		if (x.size > vi.size) {
			close(x.fd);
			return die("%s is %" PRIu64 " bytes, larger than volume '%s' (%" PRIu64 " bytes)",
			           file, x.size, name, vi.size);
		}
	} else {
		x.size = vi.size;
		if (ftruncate(x.fd, (off_t)x.size) < 0) {
			close(x.fd);
			return die("%s: %s", file, strerror(errno));
		}
	}
	for (int i = 0; i < IO_QD; i++) {
		if (posix_memalign((void **)&x.slots[i].buf, TDO_BLOCK_SIZE, IO_CHUNK)) {
			close(x.fd);
			return die("out of memory");
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
		return die("%s '%s': %s", import ? "import into" : "export of", name, tdo_strerror(err));
	printf("%s %" PRIu64 " bytes %s volume %s\n", import ? "imported" : "exported", x.size,
	       import ? "into" : "from", name);
	return 0;
}

static int cmd_volume(const char *dev, int argc, char **argv)
{
	struct session s;
	const char *sub;
	bool json = false;
	int rc = 0, err;

	if (!dev)
		return die("volume commands need --device PATH (this version has no daemon to talk to)");
	if (argc < 1)
		return die("volume: which command? (create, list, resize, delete, import, export)");
	sub = argv[0];
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--json"))
			json = true;

	if (!strcmp(sub, "create")) {
		uint64_t size;
		uint32_t flags = 0;
		if (argc < 3)
			return die("usage: testudo --device PATH volume create NAME SIZE [--compress lz4]");
		for (int i = 3; i < argc; i++) {
			if (!strcmp(argv[i], "--compress") && i + 1 < argc) {
				if (strcmp(argv[++i], "lz4"))
					return die("unknown compression '%s' (lz4)", argv[i]);
				flags |= TDO_VOL_LZ4;
			} else if (strcmp(argv[i], "--json")) {
				return die("volume create: unknown option '%s'", argv[i]);
			}
		}
		if (parse_size_arg("size", argv[2], &size))
			return 1;
		if (size == 0 || size % TDO_SECTOR_SIZE)
			return die("volume size must be a positive multiple of 512 bytes");
		if (session_open(&s, dev))
			return 1;
		err = tdo_vol_create(s.e, argv[1], size, flags, done_cb, &s);
		if (!err)
			err = session_wait(&s);
		if (err)
			rc = vol_err(argv[1], err);
		else
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
			return die("usage: testudo --device PATH volume resize NAME SIZE");
		if (parse_size_arg("size", argv[2], &size))
			return 1;
		if (size == 0 || size % TDO_SECTOR_SIZE)
			return die("volume size must be a positive multiple of 512 bytes");
		if (session_open(&s, dev))
			return 1;
		err = tdo_vol_resize(s.e, argv[1], size, done_cb, &s);
		if (!err)
			err = session_wait(&s);
		if (err)
			rc = vol_err(argv[1], err);
		else
			printf("resized volume %s to %" PRIu64 " bytes\n", argv[1], size);
	} else if (!strcmp(sub, "delete")) {
		if (argc != 2)
			return die("usage: testudo --device PATH volume delete NAME");
		if (session_open(&s, dev))
			return 1;
		err = tdo_vol_delete(s.e, argv[1], done_cb, &s);
		if (!err)
			err = session_wait(&s);
		if (err)
			rc = vol_err(argv[1], err);
		else
			printf("deleted volume %s\n", argv[1]);
	} else if (!strcmp(sub, "import") || !strcmp(sub, "export")) {
		if (argc != 3)
			return die("usage: testudo --device PATH volume %s NAME FILE", sub);
		if (session_open(&s, dev))
			return 1;
		rc = cmd_transfer(&s, argv[1], argv[2], !strcmp(sub, "import"));
	} else {
		return die("unknown volume command '%s' (create, list, resize, delete, import, export)", sub);
	}
	if (session_close(&s) && !rc)
		rc = 1;
	return rc;
}

int main(int argc, char **argv)
{
	const char *dev = NULL;
	int i = 1;

	tdo_log_set_level(TDO_LOG_WARN);
	while (i < argc && argv[i][0] == '-') {
		if (!strcmp(argv[i], "--device") && i + 1 < argc) {
			dev = argv[i + 1];
			i += 2;
		} else if (!strcmp(argv[i], "-v")) {
			tdo_log_set_level(TDO_LOG_DEBUG);
			i++;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else {
			die("unknown option '%s' (see testudo --help)", argv[i]);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[i], "format"))
		return cmd_format(argc - i - 1, argv + i + 1);
	if (!strcmp(argv[i], "volume"))
		return cmd_volume(dev, argc - i - 1, argv + i + 1);
	if (!strcmp(argv[i], "inspect") || !strcmp(argv[i], "check")) {
		const char *path = i + 1 < argc && argv[i + 1][0] != '-' ? argv[i + 1] : dev;
		bool json = false;
		int r;
		for (int k = i + 1; k < argc; k++)
			if (!strcmp(argv[k], "--json"))
				json = true;
		if (!path)
			return die("%s: which device? (testudo %s PATH)", argv[i], argv[i]);
		r = !strcmp(argv[i], "inspect") ? tdo_inspect(path, stdout, json) : tdo_check(path, stdout);
		if (r < 0)
			return die("%s: %s", path, tdo_strerror(r)) + 1;
		return r;
	}
	die("unknown command '%s' (see testudo --help)", argv[i]);
	return 2;
}
