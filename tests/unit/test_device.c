/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for device.c's mapped reads: a buffered file is mapped, a
 * copy from the mapping matches pread, and a page the kernel cannot read
 * (here: the file cut short behind the device's back) is -EIO in the
 * calling thread, any thread, as often as it happens, while a SIGBUS
 * outside dev_map_read still goes to the handler before ours, or kills.
 * Without the engine's handler in place (tdo_engine_sigbus_install not
 * called, or another handler set since) there is no mapping at all.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

#define FILE_SIZE (1u << 20)
#define CUT_TO    (64u << 10)

struct fx {
	char path[256];
	struct dev d;
};

static uint8_t pattern(uint64_t off)
{
	return (uint8_t)(off * 131 + (off >> 12) * 7 + 1);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	const char *tmp = getenv("TMPDIR");
	uint8_t *buf = malloc(FILE_SIZE);
	int fd;

	if (!f || !buf)
		return -1;
	snprintf(f->path, sizeof f->path, "%s/tdo-dev-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	fd = mkstemp(f->path);
	if (fd < 0)
		return -1;
	for (uint64_t i = 0; i < FILE_SIZE; i++)
		buf[i] = pattern(i);
	if (write(fd, buf, FILE_SIZE) != (ssize_t)FILE_SIZE)
		return -1;
	close(fd);
	free(buf);
	*state = f;
	return 0;
}

/* Opened in the test itself: cmocka sets its own SIGBUS handler around
 * each test and fixture, and the engine's goes in front of it here. */
static void open_dev(struct fx *f)
{
	assert_int_equal(tdo_engine_sigbus_install(), 0);
	assert_int_equal(dev_open(&f->d, f->path, TDO_BACKEND_FILE, false, 0, false), 0);
	assert_non_null(f->d.map);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f->d.fd > 0)
		dev_close(&f->d);
	unlink(f->path);
	free(f);
	return 0;
}

static void cut_short(struct fx *f)
{
	assert_int_equal(truncate(f->path, CUT_TO), 0);
}

static void test_map_read_matches_pread(void **state)
{
	struct fx *f = *state;
	uint8_t a[3 * 4096], b[3 * 4096];

	open_dev(f);

	assert_non_null(f->d.map);
	assert_int_equal(dev_map_read(&f->d, a, sizeof a, 5 * 4096 + 512), 0);
	assert_int_equal(dev_pread(&f->d, b, sizeof b, 5 * 4096 + 512), 0);
	assert_memory_equal(a, b, sizeof a);
	for (size_t i = 0; i < sizeof a; i++)
		assert_int_equal(a[i], pattern(5 * 4096 + 512 + i));
}

static void test_map_read_out_of_range(void **state)
{
	struct fx *f = *state;
	uint8_t a[4096];

	open_dev(f);

	assert_int_equal(dev_map_read(&f->d, a, sizeof a, FILE_SIZE - 100), -EINVAL);
	assert_int_equal(dev_map_read(&f->d, a, sizeof a, UINT64_MAX - 10), -EINVAL);
}

static void test_map_read_sees_writes(void **state)
{
	struct fx *f = *state;
	uint8_t w[4096], r[4096];

	open_dev(f);

	memset(w, 0x5a, sizeof w);
	assert_int_equal(dev_pwrite(&f->d, w, sizeof w, 7 * 4096), 0);
	assert_int_equal(dev_map_read(&f->d, r, sizeof r, 7 * 4096), 0);
	assert_memory_equal(w, r, sizeof w);
}

static void test_unreadable_page_is_eio(void **state)
{
	struct fx *f = *state;
	uint8_t a[8192];

	open_dev(f);

	cut_short(f);
	/* again and again: the signal must not stay blocked after a jump */
	for (int i = 0; i < 5; i++)
		assert_int_equal(dev_map_read(&f->d, a, 4096, 512u << 10), -EIO);
	/* a copy that starts readable and runs into the cut */
	assert_int_equal(dev_map_read(&f->d, a, sizeof a, CUT_TO - 4096), -EIO);
	/* what is still there reads as before */
	assert_int_equal(dev_map_read(&f->d, a, 4096, 4096), 0);
	for (size_t i = 0; i < 4096; i++)
		assert_int_equal(a[i], pattern(4096 + i));
}

struct thr {
	struct fx *f;
	int rc;
};

static void *thr_read(void *arg)
{
	struct thr *t = arg;
	uint8_t a[4096];

	t->rc = dev_map_read(&t->f->d, a, sizeof a, 900u << 10);
	return NULL;
}

static void test_unreadable_page_is_eio_in_a_worker(void **state)
{
	struct fx *f = *state;
	struct thr t[3];
	pthread_t th[3];

	open_dev(f);

	cut_short(f);
	for (int i = 0; i < 3; i++) {
		t[i].f = f;
		t[i].rc = 1;
		assert_int_equal(pthread_create(&th[i], NULL, thr_read, &t[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(t[i].rc, -EIO);
	}
}

/* Fork. The child starts with DISP for SIGBUS (not cmocka's handler),
 * puts the engine's handler in front of it, opens the device and gets 0;
 * the parent gets the child's pid. */
static pid_t fork_open(struct fx *f, void (*disp)(int))
{
	pid_t p = fork();

	assert_true(p >= 0);
	if (p == 0) {
		signal(SIGBUS, disp);
		if (tdo_engine_sigbus_install() ||
		    dev_open(&f->d, f->path, TDO_BACKEND_FILE, false, 0, false) || !f->d.map)
			_exit(3);
	}
	return p;
}

/* In a child: cut the file short, then touch the mapping past the cut
 * outside dev_map_read. */
static void touch_past_cut(struct fx *f)
{
	if (truncate(f->path, CUT_TO))
		_exit(4);
	volatile uint8_t x = f->d.map[600u << 10];
	(void)x;
	_exit(0);
}

static int wait_child(pid_t p)
{
	int st;

	assert_int_equal(waitpid(p, &st, 0), p);
	return st;
}

static void test_other_sigbus_still_kills(void **state)
{
	struct fx *f = *state;
	pid_t p = fork_open(f, SIG_DFL);
	int st;

	if (p == 0)
		touch_past_cut(f);
	st = wait_child(p);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGBUS);
}

static struct sigaction h_prev;
static int h_pipe = -1;

/* A handler installed after the engine's, that hands SIGBUS on to it. */
static void h_chain(int sig, siginfo_t *si, void *uc)
{
	if (write(h_pipe, "H", 1) < 0)
		_exit(5);
	h_prev.sa_sigaction(sig, si, uc);
}

/* engine, then a chaining handler, then the engine again in front: a
 * SIGBUS outside a copy visits the chain once and then kills with SIGBUS,
 * instead of bouncing between the two until the stack overflows */
static void test_chained_handler_no_loop(void **state)
{
	struct fx *f = *state;
	int pfd[2], st;
	char c = 0;
	pid_t p;

	assert_int_equal(pipe(pfd), 0);
	p = fork_open(f, SIG_DFL);
	if (p == 0) {
		struct sigaction sa;
		struct dev d2;
		char path2[300];
		int fd;

		close(pfd[0]);
		h_pipe = pfd[1];
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = h_chain;
		sa.sa_flags = SA_SIGINFO | SA_NODEFER;
		sigaction(SIGBUS, &sa, &h_prev);
		snprintf(path2, sizeof path2, "%s.3", f->path);
		fd = open(path2, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, FILE_SIZE))
			_exit(4);
		close(fd);
		memset(&d2, 0, sizeof d2);
		if (tdo_engine_sigbus_install() ||
		    dev_open(&d2, path2, TDO_BACKEND_FILE, false, 0, false) || !d2.map)
			_exit(3);
		unlink(path2);
		touch_past_cut(f);
	}
	close(pfd[1]);
	st = wait_child(p);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGBUS);
	assert_int_equal(read(pfd[0], &c, 1), 1);
	assert_int_equal(c, 'H');
	close(pfd[0]);
}

/* SIGBUS sent by kill to a process that ignored it before the engine
 * opened a device: still ignored */
static void test_ignored_kill_stays_ignored(void **state)
{
	struct fx *f = *state;
	pid_t p = fork_open(f, SIG_IGN);
	int st;

	if (p == 0) {
		raise(SIGBUS);
		_exit(0);
	}
	st = wait_child(p);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_no_map_when_asked(void **state)
{
	struct fx *f = *state;
	struct dev d;
	char path[300];
	int fd;

	snprintf(path, sizeof path, "%s.2", f->path);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, FILE_SIZE), 0);
	close(fd);
	memset(&d, 0, sizeof d);
	assert_int_equal(tdo_engine_sigbus_install(), 0);
	setenv("TDO_NO_MAPPED_READS", "1", 1);
	assert_int_equal(dev_open(&d, path, TDO_BACKEND_FILE, false, 0, false), 0);
	unsetenv("TDO_NO_MAPPED_READS");
	assert_null(d.map);
	dev_close(&d);
	unlink(path);
}

/* In a child that sets DISP for SIGBUS (after installing the engine's
 * handler when INSTALL_FIRST): exit 0 when dev_open made no mapping, 1
 * when it did. */
static int map_in_child(struct fx *f, void (*disp)(int), bool install_first)
{
	pid_t p = fork();

	assert_true(p >= 0);
	if (p == 0) {
		if (install_first && tdo_engine_sigbus_install())
			_exit(3);
		signal(SIGBUS, disp);
		if (dev_open(&f->d, f->path, TDO_BACKEND_FILE, false, 0, false))
			_exit(4);
		_exit(f->d.map ? 1 : 0);
	}
	return wait_child(p);
}

/* a program that never installed the handler: no mapping, pread only */
static void test_no_map_without_handler(void **state)
{
	struct fx *f = *state;
	int st = map_in_child(f, SIG_DFL, false);

	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* installed, then replaced by the program's own: no mapping either */
static void test_no_map_after_handler_replaced(void **state)
{
	struct fx *f = *state;
	int st = map_in_child(f, SIG_DFL, true);

	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_map_read_matches_pread),
		T(test_map_read_out_of_range),
		T(test_map_read_sees_writes),
		T(test_unreadable_page_is_eio),
		T(test_unreadable_page_is_eio_in_a_worker),
		T(test_other_sigbus_still_kills),
		T(test_chained_handler_no_loop),
		T(test_ignored_kill_stays_ignored),
		T(test_no_map_when_asked),
		T(test_no_map_without_handler),
		T(test_no_map_after_handler_replaced),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
