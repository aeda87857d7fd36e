/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testudo: the command line. Online, it talks to a running testudod over
 * its admin HTTP API (default 127.0.0.1:10810):
 *
 *   testudo [--admin HOST:PORT] volume create NAME SIZE [--compress lz4] [--json]
 *   testudo [--admin HOST:PORT] volume list [--json]
 *   testudo [--admin HOST:PORT] volume resize NAME SIZE [--json]
 *   testudo [--admin HOST:PORT] volume delete NAME [--json]
 *   testudo [--admin HOST:PORT] status [--json]
 *
 * The offline commands open a device directly (and so refuse one a daemon
 * holds):
 *
 *   testudo format PATH [--size SIZE] [--backend file|pmem] [--segment-size SIZE] [--force] [--sparse]
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

#include "internal.h"

#define IO_CHUNK (1u << 20)
#define IO_QD    8

static const char *prog = "testudo";

static void usage(FILE *f)
{
	fprintf(f,
	        "usage:\n"
	        "online, with a running testudod (--admin default 127.0.0.1:10810):\n"
	        "  testudo [--admin HOST:PORT] volume create NAME SIZE [--compress lz4] [--replicas N] [--primary ID] [--json]\n"
	        "  testudo [--admin HOST:PORT] volume list [--json]\n"
	        "  testudo [--admin HOST:PORT] volume resize NAME SIZE [--json]\n"
	        "  testudo [--admin HOST:PORT] volume delete NAME [--json]\n"
	        "  testudo [--admin HOST:PORT] volume verify NAME [--json]     (a cluster: compare the replicas)\n"
	        "  testudo [--admin HOST:PORT] promote NAME --node ID [--json] (a cluster: make ID the primary)\n"
	        "  testudo [--admin HOST:PORT] status [--json]\n"
	        "offline, on a device no daemon holds:\n"
	        "  testudo format PATH [--size SIZE] [--backend file|pmem] [--segment-size SIZE] [--force] [--sparse]\n"
	        "  testudo --device PATH volume create NAME SIZE [--compress lz4]\n"
	        "  testudo --device PATH volume list [--json]\n"
	        "  testudo --device PATH volume resize NAME SIZE\n"
	        "  testudo --device PATH volume delete NAME\n"
	        "  testudo --device PATH volume import NAME FILE\n"
	        "  testudo --device PATH volume export NAME FILE\n"
	        "  testudo inspect PATH [--json]\n"
	        "  testudo check PATH\n"
	        "SIZE takes K, M, G and T suffixes (powers of 1024). format writes zeros into a regular\n"
	        "file's holes, so the log never allocates file system space as it runs (--sparse: leave them).\n");
}

int cli_die(const char *fmt, ...)
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
		cli_die("invalid %s '%s' (expected a number with an optional K/M/G/T suffix)", what, s);
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

/* ---- commands ----------------------------------------------------------- */

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

static int cmd_format(int argc, char **argv)
{
	struct tdo_format_opts o = { 0 };
	struct progress fp;
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

static int cmd_volume(const char *dev, int argc, char **argv)
{
	struct session s;
	const char *sub;
	bool json = false;
	int rc = 0, err;

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
		if (parse_size_arg("size", argv[2], &size))
			return 1;
		if (size == 0 || size % TDO_SECTOR_SIZE)
			return cli_die("volume size must be a positive multiple of 512 bytes");
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
			return cli_die("usage: testudo --device PATH volume resize NAME SIZE");
		if (parse_size_arg("size", argv[2], &size))
			return 1;
		if (size == 0 || size % TDO_SECTOR_SIZE)
			return cli_die("volume size must be a positive multiple of 512 bytes");
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
			return cli_die("usage: testudo --device PATH volume delete NAME");
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

/* ---- online: through the daemon's admin API ----------------------------- */

static uint64_t ju64(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static const char *jstr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_string(v) ? json_string_value(v) : "?";
}

static int online_name(const char *name)
{
	if (!tdo_vol_name_valid(name))
		return cli_die("invalid volume name '%s' (1-63 of A-Z a-z 0-9 . _ -, not starting with . or -)", name);
	return 0;
}

static int online_size(const char *arg, uint64_t *size)
{
	if (parse_size_arg("size", arg, size))
		return 1;
	if (*size == 0 || *size % TDO_SECTOR_SIZE)
		return cli_die("volume size must be a positive multiple of 512 bytes");
	return 0;
}

static int cmd_volume_online(const struct admin_addr *a, int argc, char **argv)
{
	const char *pos[3] = { 0 }, *sub, *compress = NULL, *primary = NULL;
	long replicas = 0;
	struct admin_reply r;
	char path[128], *body = NULL;
	bool json = false;
	json_t *j;
	int npos = 0, rc;
	uint64_t size = 0;

	if (argc < 1)
		return cli_die("volume: which command? (create, list, resize, delete)");
	sub = argv[0];
	if (!strcmp(sub, "import") || !strcmp(sub, "export"))
		return cli_die("volume %s works offline only: stop testudod, then testudo --device PATH volume %s NAME FILE",
		           sub, sub);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--compress") && !strcmp(sub, "create") && i + 1 < argc) {
			compress = argv[++i];
			if (strcmp(compress, "lz4") && strcmp(compress, "none"))
				return cli_die("unknown compression '%s' (lz4)", compress);
		} else if (!strcmp(argv[i], "--replicas") && !strcmp(sub, "create") && i + 1 < argc) {
			char *end;
			replicas = strtol(argv[++i], &end, 10);
			if (*end || end == argv[i] || replicas < 1 || replicas > 5)
				return cli_die("--replicas '%s': a number from 1 to 5", argv[i]);
		} else if (!strcmp(argv[i], "--primary") && !strcmp(sub, "create") && i + 1 < argc) {
			primary = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return cli_die("volume %s: unknown option '%s'", sub, argv[i]);
		} else if (npos < 3) {
			pos[npos++] = argv[i];
		} else {
			return cli_die("volume %s: unexpected argument '%s'", sub, argv[i]);
		}
	}

	if (!strcmp(sub, "list")) {
		if (npos)
			return cli_die("usage: testudo volume list [--json]");
		if (admin_do(a, "GET", "/v1/volumes", NULL, json, &r, &j))
			return 1;
		if (!json && json_array_size(j) && json_object_get(json_array_get(j, 0), "replicas")) {
			char s1[32];
			size_t k, m;
			json_t *v, *rp;
			printf("%-24s %14s %6s %-12s %s\n", "NAME", "SIZE", "EPOCH", "PRIMARY", "REPLICAS");
			json_array_foreach(j, k, v) {
				printf("%-24s %14s %6" PRIu64 " %-12s", jstr(v, "name"),
				       tdo_format_size(ju64(v, "size"), s1, sizeof s1), ju64(v, "epoch"), jstr(v, "primary"));
				json_array_foreach(json_object_get(v, "replicas"), m, rp)
					printf(" %s=%s", jstr(rp, "node"), json_is_true(json_object_get(rp, "down")) ? "down" :
					       jstr(rp, "state"));
				printf("\n");
			}
		} else if (!json) {
			char s1[32], s2[32];
			size_t k;
			json_t *v;
			printf("%-24s %14s %10s %6s %12s %6s\n", "NAME", "SIZE", "USED", "LZ4", "LSN", "CONNS");
			json_array_foreach(j, k, v)
				printf("%-24s %14s %10s %6s %12" PRIu64 " %6" PRIu64 "\n", jstr(v, "name"),
				       tdo_format_size(ju64(v, "size"), s1, sizeof s1),
				       tdo_format_size(ju64(v, "used"), s2, sizeof s2),
				       strcmp(jstr(v, "compress"), "lz4") ? "no" : "yes", ju64(v, "lsn"),
				       ju64(v, "connections"));
		}
		json_decref(j);
		free(r.raw);
		return 0;
	}
	if (!strcmp(sub, "create")) {
		json_t *req;
		if (npos != 2)
			return cli_die("usage: testudo volume create NAME SIZE [--compress lz4]");
		if (online_name(pos[0]) || online_size(pos[1], &size))
			return 1;
		req = json_pack("{s:s, s:I, s:s}", "name", pos[0], "size", (json_int_t)size,
		                "compress", compress ? compress : "none");
		if (req && replicas)
			json_object_set_new(req, "replicas", json_integer(replicas));
		if (req && primary)
			json_object_set_new(req, "primary", json_string(primary));
		body = req ? json_dumps(req, JSON_COMPACT) : NULL;
		json_decref(req);
		if (!body)
			return cli_die("out of memory");
		rc = admin_do(a, "POST", "/v1/volumes", body, json, &r, &j);
		free(body);
		if (rc)
			return 1;
		if (!json && json_object_get(j, "replicas")) {
			size_t m;
			json_t *rp;
			printf("created volume %s (%" PRIu64 " bytes%s), primary %s, replicas", jstr(j, "name"),
			       ju64(j, "size"), strcmp(jstr(j, "compress"), "lz4") ? "" : ", lz4", jstr(j, "primary"));
			json_array_foreach(json_object_get(j, "replicas"), m, rp)
				printf("%s %s", m ? "," : "", jstr(rp, "node"));
			printf("\n");
		} else if (!json)
			printf("created volume %s (%" PRIu64 " bytes%s)\n", jstr(j, "name"), ju64(j, "size"),
			       strcmp(jstr(j, "compress"), "lz4") ? "" : ", lz4");
	} else if (!strcmp(sub, "resize")) {
		json_t *req;
		if (npos != 2)
			return cli_die("usage: testudo volume resize NAME SIZE");
		if (online_name(pos[0]) || online_size(pos[1], &size))
			return 1;
		req = json_pack("{s:I}", "size", (json_int_t)size);
		body = req ? json_dumps(req, JSON_COMPACT) : NULL;
		json_decref(req);
		if (!body)
			return cli_die("out of memory");
		snprintf(path, sizeof path, "/v1/volumes/%s", pos[0]);
		rc = admin_do(a, "PUT", path, body, json, &r, &j);
		free(body);
		if (rc)
			return 1;
		if (!json)
			printf("resized volume %s to %" PRIu64 " bytes\n", jstr(j, "name"), ju64(j, "size"));
	} else if (!strcmp(sub, "delete")) {
		if (npos != 1)
			return cli_die("usage: testudo volume delete NAME");
		if (online_name(pos[0]))
			return 1;
		snprintf(path, sizeof path, "/v1/volumes/%s", pos[0]);
		if (admin_do(a, "DELETE", path, NULL, json, &r, &j))
			return 1;
		if (!json)
			printf("deleted volume %s\n", pos[0]);
	} else if (!strcmp(sub, "verify")) {
		if (npos != 1)
			return cli_die("usage: testudo volume verify NAME");
		if (online_name(pos[0]))
			return 1;
		snprintf(path, sizeof path, "/v1/volumes/%s/verify", pos[0]);
		if (admin_do(a, "POST", path, "{}", json, &r, &j))
			return 1;
		bool same = json_is_true(json_object_get(j, "identical"));
		if (!json) {
			size_t m;
			json_t *x;
			printf("volume %s: %" PRIu64 " regions of %" PRIu64 " bytes on %zu replicas: %s\n", jstr(j, "volume"),
			       ju64(j, "regions"), ju64(j, "region_bytes"), json_array_size(json_object_get(j, "replicas")),
			       same ? "identical" : "DIFFERENT");
			json_array_foreach(json_object_get(j, "replicas"), m, x)
				printf("  %-16s %s\n", jstr(x, "node"), jstr(x, "result"));
			json_array_foreach(json_object_get(j, "differences"), m, x)
				printf("  differs at offset %" PRIu64 " (%" PRIu64 " bytes)\n", ju64(x, "offset"), ju64(x, "length"));
		}
		json_decref(j);
		free(r.raw);
		return same ? 0 : 1;
	} else {
		return cli_die("unknown volume command '%s' (create, list, resize, delete, verify; import and export are "
		           "offline)", sub);
	}
	json_decref(j);
	free(r.raw);
	return 0;
}

static void print_duration(uint64_t s)
{
	if (s >= 86400)
		printf("%" PRIu64 "d ", s / 86400);
	printf("%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 "\n", s / 3600 % 24, s / 60 % 60, s % 60);
}

static int cmd_status(const struct admin_addr *a, int argc, char **argv)
{
	struct admin_reply r;
	bool json = false;
	json_t *j, *e, *seg, *l;
	char s1[32], s2[32];

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else
			return cli_die("status: unexpected argument '%s' (testudo status [--json])", argv[i]);
	}
	if (admin_do(a, "GET", "/v1/status", NULL, json, &r, &j))
		return 1;
	if (!json) {
		e = json_object_get(j, "engine");
		seg = json_object_get(e, "segments");
		l = json_object_get(j, "listeners");
		printf("device:              %s\n", jstr(j, "device"));
		printf("nbd:                 %s\n", jstr(l, "nbd"));
		printf("admin:               %s\n", jstr(l, "admin"));
		printf("uptime:              ");
		print_duration(ju64(j, "uptime_seconds"));
		printf("volumes:             %" PRIu64 "\n", ju64(j, "volumes"));
		printf("nbd connections:     %" PRIu64 "\n", ju64(j, "connections"));
		printf("capacity:            %s\n", tdo_format_size(ju64(e, "capacity"), s1, sizeof s1));
		printf("volume bytes:        %s (%.1f%% of capacity)\n",
		       tdo_format_size(ju64(e, "volume_bytes"), s1, sizeof s1),
		       ju64(e, "capacity") ? 100.0 * (double)ju64(e, "volume_bytes") / (double)ju64(e, "capacity") : 0.0);
		printf("live bytes:          %s\n", tdo_format_size(ju64(e, "live_bytes"), s1, sizeof s1));
		printf("segments:            %" PRIu64 " used, %" PRIu64 " free, %" PRIu64 " total of %s\n",
		       ju64(seg, "used"), ju64(seg, "free"), ju64(seg, "total"),
		       tdo_format_size(ju64(e, "segment_bytes"), s1, sizeof s1));
		printf("write amplification: %.2f\n", json_number_value(json_object_get(e, "write_amplification")));
		printf("written:             %s by clients, %s to the log\n",
		       tdo_format_size(ju64(e, "user_bytes"), s1, sizeof s1),
		       tdo_format_size(ju64(e, "log_bytes"), s2, sizeof s2));
		printf("flush batches:       %" PRIu64 " (%" PRIu64 " records)\n", ju64(e, "batches"),
		       ju64(e, "batch_records"));
		printf("checkpoints:         %" PRIu64 "\n", ju64(e, "checkpoints"));
		printf("cleaner:             %" PRIu64 " segments cleaned, %s copied\n", ju64(e, "segments_cleaned"),
		       tdo_format_size(ju64(e, "cleaner_bytes"), s1, sizeof s1));
		printf("read errors:         %" PRIu64 "\n", ju64(e, "read_errors"));
		printf("engine:              %s\n",
		       json_is_true(json_object_get(e, "poisoned")) ? "STOPPED after a failed device write" : "ok");
		json_t *cl = json_object_get(j, "cluster"), *pe;
		size_t k;
		if (cl) {
			printf("cluster:             %s, node %s, peers on %s\n", jstr(cl, "name"), jstr(cl, "node_id"),
			       jstr(cl, "repl"));
			json_array_foreach(json_object_get(cl, "peers"), k, pe) {
				printf("  peer %-14s %-22s %-10s for %.1f s, %" PRIu64 " connects, %" PRIu64 " drops%s%s\n",
				       jstr(pe, "id"), jstr(pe, "address"), jstr(pe, "state"),
				       json_number_value(json_object_get(pe, "state_seconds")), ju64(pe, "connects"),
				       ju64(pe, "drops"), *jstr(pe, "last_error") ? "; last error: " : "",
				       jstr(pe, "last_error"));
			}
			json_array_foreach(json_object_get(cl, "volumes"), k, pe) {
				size_t m;
				json_t *rp, *rs;
				printf("  volume %-20s epoch %" PRIu64 ", primary %s, this node %s\n", jstr(pe, "name"),
				       ju64(pe, "epoch"), jstr(pe, "primary"), jstr(pe, "role"));
				json_array_foreach(json_object_get(pe, "replicas"), m, rp) {
					printf("    %-16s %-12s%s", jstr(rp, "node"), jstr(rp, "state"),
					       json_is_true(json_object_get(rp, "down")) ? " down" : "");
					if ((rs = json_object_get(rp, "resync")))
						printf("  resync %s: %" PRIu64 " of %" PRIu64 " blocks copied (%.0f%%)", jstr(rs, "phase"),
						       ju64(rs, "copied_blocks"), ju64(rs, "total_blocks"),
						       ju64(rs, "total_blocks") ? 100.0 * (double)ju64(rs, "copied_blocks") /
						       (double)ju64(rs, "total_blocks") : 0.0);
					printf("\n");
				}
			}
		}
	}
	json_decref(j);
	free(r.raw);
	return 0;
}

static int cmd_promote(const struct admin_addr *a, int argc, char **argv)
{
	const char *name = NULL, *node = NULL;
	bool json = false;
	struct admin_reply r;
	char path[128];
	json_t *j;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--node") && i + 1 < argc)
			node = argv[++i];
		else if (argv[i][0] != '-' && !name)
			name = argv[i];
		else
			return cli_die("promote: unexpected argument '%s' (testudo promote NAME --node ID)", argv[i]);
	}
	if (!name || !node)
		return cli_die("usage: testudo promote NAME --node ID");
	if (online_name(name))
		return 1;
	json_t *req = json_pack("{s:s}", "node", node);
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!body)
		return cli_die("out of memory");
	snprintf(path, sizeof path, "/v1/volumes/%s/promote", name);
	int rc = admin_do(a, "POST", path, body, json, &r, &j);
	free(body);
	if (rc)
		return 1;
	if (!json)
		printf("promoted %s to primary of %s (epoch %" PRIu64 ")\n", jstr(j, "primary"), jstr(j, "volume"),
		       ju64(j, "epoch"));
	json_decref(j);
	free(r.raw);
	return 0;
}

int main(int argc, char **argv)
{
	const char *dev = NULL, *admin = NULL;
	struct admin_addr aa;
	int i = 1;

	tdo_log_set_level(TDO_LOG_WARN);
	while (i < argc && argv[i][0] == '-') {
		if (!strcmp(argv[i], "--device") && i + 1 < argc) {
			dev = argv[i + 1];
			i += 2;
		} else if (!strcmp(argv[i], "--admin") && i + 1 < argc) {
			admin = argv[i + 1];
			i += 2;
		} else if (!strcmp(argv[i], "-v")) {
			tdo_log_set_level(TDO_LOG_DEBUG);
			i++;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else {
			cli_die("unknown option '%s' (see testudo --help)", argv[i]);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	if (dev && admin)
		return cli_die("--device works on a device offline, --admin talks to testudod: give one, not both");
	if (admin_parse_addr(admin ? admin : ADMIN_DEFAULT, &aa) < 0)
		return cli_die("invalid --admin '%s' (expected HOST:PORT, [IPv6]:PORT or :PORT)", admin);
	if (!strcmp(argv[i], "format"))
		return cmd_format(argc - i - 1, argv + i + 1);
	if (!strcmp(argv[i], "volume") && dev)
		return cmd_volume(dev, argc - i - 1, argv + i + 1);
	if (!strcmp(argv[i], "volume"))
		return cmd_volume_online(&aa, argc - i - 1, argv + i + 1);
	if (!strcmp(argv[i], "promote")) {
		if (dev)
			return cli_die("promote asks testudod (--admin), not a device");
		return cmd_promote(&aa, argc - i - 1, argv + i + 1);
	}
	if (!strcmp(argv[i], "status")) {
		if (dev)
			return cli_die("status asks testudod; for a device no daemon holds, use testudo inspect PATH");
		return cmd_status(&aa, argc - i - 1, argv + i + 1);
	}
	if (!strcmp(argv[i], "inspect") || !strcmp(argv[i], "check")) {
		const char *path = i + 1 < argc && argv[i + 1][0] != '-' ? argv[i + 1] : dev;
		bool json = false;
		int r;
		for (int k = i + 1; k < argc; k++)
			if (!strcmp(argv[k], "--json"))
				json = true;
		if (!path)
			return cli_die("%s: which device? (testudo %s PATH)", argv[i], argv[i]);
		r = !strcmp(argv[i], "inspect") ? tdo_inspect(path, stdout, json) : tdo_check(path, stdout);
		if (r < 0)
			return cli_die("%s: %s", path, tdo_strerror(r)) + 1;
		return r;
	}
	cli_die("unknown command '%s' (see testudo --help)", argv[i]);
	return 2;
}
