/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NBD handshake and request parsers under fuzzing. Each input is the
 * byte stream one client sends: it is fed through a socketpair into a real
 * connection of the daemon's NBD code (nbd_conn_adopt), backed by a real
 * engine on a scratch device, and the loop runs until the connection is
 * gone. Replies are read and dropped.
 *
 * Built two ways:
 *   - plain (make check): `nbd_fuzz FILE...` replays a corpus, so every
 *     input that ever mattered runs under ASan+UBSan on every check;
 *   - with -DNBD_LIBFUZZER and clang's -fsanitize=fuzzer (make fuzz).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

static struct daemon D;
static uv_loop_t loop;
static char dev_path[256];

/* The daemon's main.c is not linked here; this is its hook. */
void daemon_conns_drained(struct daemon *d)
{
	(void)d;
}

static void done_cb(void *arg, int status)
{
	*(int *)arg = status ? status : 1;
}

static void setup(void)
{
	struct tdo_format_opts fo = { .size = 64u << 20, .seg_size = 1u << 20, .force = 1, .sparse = 1 };
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	int done = 0, err;

	tdo_log_set_level(getenv("NBD_FUZZ_VERBOSE") ? TDO_LOG_DEBUG : TDO_LOG_ERROR);
	snprintf(dev_path, sizeof dev_path, "%s/nbd_fuzz.%d.img", tmp, (int)getpid());
	if ((err = tdo_format(dev_path, &fo))) {
		fprintf(stderr, "nbd_fuzz: format %s: %s\n", dev_path, tdo_strerror(err));
		exit(2);
	}
	uv_loop_init(&loop);
	D.loop = &loop;
	tdo_list_init(&D.conns);
	D.device = dev_path;
	if ((err = tdo_engine_open(&loop, dev_path, NULL, &D.engine))) {
		fprintf(stderr, "nbd_fuzz: open: %s\n", tdo_strerror(err));
		exit(2);
	}
	/* the inputs name this export; 16 MiB keeps writes cheap */
	if (tdo_vol_create(D.engine, "fuzz", 16u << 20, 0, done_cb, &done))
		exit(2);
	while (!done)
		uv_run(&loop, UV_RUN_ONCE);
	/* the access tier reaches volumes only through the volume tier: a
	 * node outside any cluster, as testudod without --node-id */
	struct tdo_vtier_opts vo = { 0 };
	char why[256];
	if (tdo_vtier_start(&loop, D.engine, NULL, &vo, &D.vtier, why, sizeof why)) {
		fprintf(stderr, "nbd_fuzz: volume tier: %s\n", why);
		exit(2);
	}
}

struct feed {
	uv_poll_t poll;
	int fd;
	const uint8_t *data;
	size_t size, off;
	bool eof_sent, closed;
};

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct feed *f = p->data;
	char sink[65536];

	if (status < 0) {
		f->closed = true;
		uv_poll_stop(p);
		return;
	}
	if (events & UV_READABLE) {
		ssize_t n = read(f->fd, sink, sizeof sink);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			f->closed = true;
			uv_poll_stop(p);
			return;
		}
	}
	if (events & UV_WRITABLE) {
		if (f->off < f->size) {
			ssize_t n = write(f->fd, f->data + f->off, f->size - f->off);
			if (n > 0)
				f->off += (size_t)n;
			else if (n < 0 && errno != EAGAIN && errno != EINTR)
				f->off = f->size;
		}
		if (f->off >= f->size && !f->eof_sent) {
			shutdown(f->fd, SHUT_WR); /* the client is done talking */
			f->eof_sent = true;
			uv_poll_start(p, UV_READABLE, on_poll);
		}
	}
}

static void one_input(const uint8_t *data, size_t size)
{
	struct feed f = { .data = data, .size = size };
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		abort();
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	f.fd = sv[1];
	if (nbd_conn_adopt(&D, sv[0]))
		abort();
	uv_poll_init(&loop, &f.poll, sv[1]);
	f.poll.data = &f;
	uv_poll_start(&f.poll, UV_READABLE | UV_WRITABLE, on_poll);
	/* until the server has closed its side and every request finished */
	while (!tdo_list_empty(&D.conns) || !f.closed) {
		uv_run(&loop, UV_RUN_ONCE);
		if (tdo_list_empty(&D.conns) && f.eof_sent && !f.closed)
			f.closed = true;
	}
	uv_poll_stop(&f.poll);
	uv_close((uv_handle_t *)&f.poll, NULL);
	uv_run(&loop, UV_RUN_NOWAIT);
	close(sv[1]);
}

#ifdef NBD_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;

	if (!ready) {
		setup();
		ready = true;
	}
	one_input(data, size);
	return 0;
}
#else
int main(int argc, char **argv)
{
	int ran = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: nbd_fuzz FILE...   (replays each file as one client's byte stream)\n");
		return 2;
	}
	setup();
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		uint8_t *buf;
		long n;

		if (!f) {
			fprintf(stderr, "nbd_fuzz: %s: %s\n", argv[i], strerror(errno));
			return 2;
		}
		fseek(f, 0, SEEK_END);
		n = ftell(f);
		rewind(f);
		buf = malloc(n > 0 ? (size_t)n : 1);
		if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
			return 2;
		fclose(f);
		one_input(buf, (size_t)n);
		free(buf);
		ran++;
	}
	{
		int done = 0;
		tdo_vtier_stop(D.vtier);
		tdo_engine_close(D.engine, done_cb, &done);
		while (!done)
			uv_run(&loop, UV_RUN_ONCE);
		uv_run(&loop, UV_RUN_DEFAULT);
		tdo_vtier_free(D.vtier);
		uv_loop_close(&loop);
		unlink(dev_path);
	}
	printf("nbd_fuzz: replayed %d inputs, no crash\n", ran);
	return 0;
}
#endif
