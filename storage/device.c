/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the two backends behind three calls (pread, pwrite, sync).
 *
 * file: a regular file or a block device. A block device is opened O_DIRECT
 *   (the page cache never holds a second copy); a regular file uses the page
 *   cache unless the caller asks for O_DIRECT (DIRECT), as file-backed NBD
 *   servers do. Durability is fdatasync after each batch either way.
 *   A buffered regular file is also mapped read-only, for the reads the
 *   engine scatters over many places (dev_map_read: a copy, no system call
 *   and no page-cache lookup per place once the pages are mapped), but
 *   only when the program installed the engine's SIGBUS handler
 *   (tdo_engine_sigbus_install): a library does not take a process signal
 *   for itself, and without the handler a page that cannot be read would
 *   kill the process.
 * pmem: the file is mapped with libpmem; a write is pmem_memcpy_nodrain and
 *   sync is pmem_drain (or pmem_msync when the mapping is not real pmem and
 *   PMEM_IS_PMEM_FORCE is not set).
 *
 * Fault injection for tests lives here because only here do we know which
 * bytes are durable: every write records the bytes it replaced until the
 * next sync; a power cut puts back a random subset of them (page by page)
 * and exits the process at once. It is compiled in only with
 * -DTDO_FAULT_INJECTION (libtestudo-storage-fault.a, which the torture
 * program links); the library that testudod, testudo and testudo-bench
 * link ignores the TDO_FAULT_* variables and says so once per engine open.
 *
 * Must never: be called from the loop thread for data I/O (the engine hands
 * it to workers), or retry a failed sync.
 */
#include <errno.h>
#include <fcntl.h>
#include <libpmem.h>
#include <linux/fs.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* How long dev_open waits for another holder's lock: 2 s in all. */
#define LOCK_TRIES   100
#define LOCK_WAIT_US 20000

struct fi_undo {
	struct fi_undo *next;
	uint64_t off;
	size_t len;
	uint64_t gen;
	uint8_t *old;               /* 4 KiB aligned: the fd may be O_DIRECT */
};

void *dev_alloc(size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, TDO_BLOCK_SIZE, round_up(len ? len : 1, TDO_BLOCK_SIZE)))
		return NULL;
	memset(p, 0, round_up(len ? len : 1, TDO_BLOCK_SIZE));
	return p;
}

int dev_probe_size(const char *path, uint64_t *size, bool *is_blockdev)
{
	struct stat st;
	int fd;

	if (stat(path, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz = 0;

		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		if (ioctl(fd, BLKGETSIZE64, &sz) < 0) {
			int err = -errno;
			close(fd);
			return err;
		}
		close(fd);
		*size = sz;
		*is_blockdev = true;
		return 0;
	}
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	*size = (uint64_t)st.st_size;
	*is_blockdev = false;
	return 0;
}

/*
 * Reads copied from the mapping. A page the kernel cannot read in (an I/O
 * error, or a file cut short behind our back) raises SIGBUS in the thread
 * that touched it; the handler jumps back into dev_map_read, which returns
 * -EIO, as pread would have. A SIGBUS anywhere else (another address, or
 * sent by kill) goes to whatever handled it before (by default: the
 * process dies, as without us).
 *
 * The handler goes in only when the program calls tdo_engine_sigbus_install,
 * never behind its back; dev_open maps a file only while the handler in
 * place is ours. A handler that a program installs after that comes first;
 * calling tdo_engine_sigbus_install again puts ours in front of it.
 */
struct map_copy {
	sigjmp_buf jb;
	const uint8_t *lo, *hi;     /* the bytes being copied */
};
static _Thread_local struct map_copy *volatile map_cur;
static _Thread_local volatile sig_atomic_t bus_chaining;
static struct sigaction bus_prev;
static pthread_mutex_t bus_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct map_copy *mc = map_cur;

	/* a fault (si_code > 0; not a kill) in the bytes being copied */
	if (mc && si && si->si_code > 0 && (const uint8_t *)si->si_addr >= mc->lo &&
	    (const uint8_t *)si->si_addr < mc->hi) {
		map_cur = NULL;
		siglongjmp(mc->jb, 1);
	}
	/* anything else is the earlier handler's; one that hands the signal
	 * back to us (we were installed again in front of it) gets the
	 * default action instead of a loop */
	if (!bus_chaining) {
		bus_chaining = 1;
		if (bus_prev.sa_flags & SA_SIGINFO) {
			if (bus_prev.sa_sigaction) {
				bus_prev.sa_sigaction(sig, si, uc);
				bus_chaining = 0;
				return;
			}
		} else if (bus_prev.sa_handler == SIG_IGN) {
			bus_chaining = 0;
			if (!si || si->si_code <= 0)
				return; /* a kill that was ignored before us */
		} else if (bus_prev.sa_handler != SIG_DFL) {
			bus_prev.sa_handler(sig);
			bus_chaining = 0;
			return;
		}
	}
	/* the default action: the process dies of SIGBUS */
	signal(SIGBUS, SIG_DFL);
	raise(SIGBUS);
}

static bool bus_is_ours(const struct sigaction *cur)
{
	return (cur->sa_flags & SA_SIGINFO) && cur->sa_sigaction == on_sigbus;
}

/* Ours, in front of whatever was there (which is then chained), unless
 * it is already. */
int tdo_engine_sigbus_install(void)
{
	struct sigaction sa, cur;
	int err = 0;

	pthread_mutex_lock(&bus_lock);
	if (sigaction(SIGBUS, NULL, &cur) < 0) {
		err = -errno;
	} else if (!bus_is_ours(&cur)) {
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = on_sigbus;
		sa.sa_flags = SA_SIGINFO | SA_NODEFER; /* not blocked after the jump out */
		sigemptyset(&sa.sa_mask);
		bus_prev = cur;
		if (sigaction(SIGBUS, &sa, NULL) < 0) {
			err = -errno;
			memset(&bus_prev, 0, sizeof bus_prev);
		}
	}
	pthread_mutex_unlock(&bus_lock);
	return err;
}

/* May dev_open map a file: is our handler the one in place? */
static bool bus_installed(void)
{
	struct sigaction cur;
	bool ours;

	pthread_mutex_lock(&bus_lock);
	ours = sigaction(SIGBUS, NULL, &cur) == 0 && bus_is_ours(&cur);
	pthread_mutex_unlock(&bus_lock);
	return ours;
}

int dev_map_read(const struct dev *d, void *buf, size_t len, uint64_t off)
{
	struct map_copy mc;

	if (!d->map || off + len > d->size || off + len < off)
		return -EINVAL;
	mc.lo = d->map + off;
	mc.hi = d->map + off + len;
	if (sigsetjmp(mc.jb, 0))
		return -EIO;
	map_cur = &mc;
	__asm__ volatile("" ::: "memory");
	memcpy(buf, d->map + off, len);
	__asm__ volatile("" ::: "memory");
	map_cur = NULL;
	return 0;
}

/* Fault injection: compiled in only with -DTDO_FAULT_INJECTION (tests). */
#ifdef TDO_FAULT_INJECTION
static void fi_init(struct dev *d)
{
	const char *s = getenv("TDO_FAULT_POWERCUT");

	pthread_mutex_init(&d->fi_lock, NULL);
	d->fi_cut_at = 0;
	d->fi_eio_at = 0;
	d->fi_seed = 1;
	if (s && *s) {
		char *end;
		d->fi_cut_at = strtol(s, &end, 10);
		if (*end == ':')
			d->fi_seed = (unsigned)strtoul(end + 1, NULL, 10);
	}
	s = getenv("TDO_FAULT_EIO_WRITE");
	if (s && *s)
		d->fi_eio_at = strtol(s, NULL, 10);
	d->fi_skip_sync = tdo_env_on("TDO_FAULT_SKIP_SYNC");
}

/* The power goes out: each 4 KiB page of each write not yet durable
 * reached the medium or not, at random. Called with fi_lock held. */
static void fi_cut(struct dev *d)
{
	struct fi_undo *u;
	unsigned seed = d->fi_seed;

	for (u = d->fi_undo; u; u = u->next) {
		for (size_t o = 0; o < u->len; o += TDO_BLOCK_SIZE) {
			size_t n = u->len - o < TDO_BLOCK_SIZE ? u->len - o : TDO_BLOCK_SIZE;
			if (rand_r(&seed) % 2 == 0)
				continue; /* this page made it */
			if (d->pmem)
				memcpy(d->pmem + u->off + o, u->old + o, n);
			else if (pwrite(d->fd, u->old + o, n, (off_t)(u->off + o)) < 0)
				_exit(98);
		}
	}
	if (d->pmem)
		pmem_msync(d->pmem, d->pmem_len);
	else
		fsync(d->fd);
	tdo_log(TDO_LOG_WARN, "fault", "power cut injected after %ld device operations", d->fi_ops);
	_exit(99);
}

/* Returns -EIO when an injected write error fires. */
int dev_fi_before_write(struct dev *d, uint64_t off, size_t len)
{
	struct fi_undo *u;
	int err = 0;

	if (!d->fi_cut_at && !d->fi_eio_at)
		return 0;
	pthread_mutex_lock(&d->fi_lock);
	d->fi_ops++;
	if (d->fi_cut_at && d->fi_ops >= d->fi_cut_at)
		fi_cut(d);
	if (d->fi_eio_at && d->fi_ops == d->fi_eio_at)
		err = -EIO;
	if (d->fi_cut_at && !err) {
		u = malloc(sizeof *u);
		if (u && !(u->old = dev_alloc(len))) {
			free(u);
			u = NULL;
		}
		if (u) {
			u->off = off;
			u->len = len;
			u->gen = d->fi_gen;
			if (d->pmem)
				memcpy(u->old, d->pmem + off, len);
			else {
				ssize_t r = pread(d->fd, u->old, len, (off_t)off);
				if (r < (ssize_t)len)
					memset(u->old + (r > 0 ? r : 0), 0, len - (size_t)(r > 0 ? r : 0));
			}
			u->next = d->fi_undo;
			d->fi_undo = u;
		}
	}
	pthread_mutex_unlock(&d->fi_lock);
	return err;
}

uint64_t dev_fi_sync_begin(struct dev *d)
{
	uint64_t gen;

	if (!d->fi_cut_at)
		return 0;
	pthread_mutex_lock(&d->fi_lock);
	d->fi_ops++;
	if (d->fi_ops >= d->fi_cut_at)
		fi_cut(d);
	gen = d->fi_gen++;
	pthread_mutex_unlock(&d->fi_lock);
	return gen;
}

void dev_fi_sync_end(struct dev *d, uint64_t gen)
{
	struct fi_undo **pp, *u;

	if (!d->fi_cut_at)
		return;
	pthread_mutex_lock(&d->fi_lock);
	for (pp = &d->fi_undo; (u = *pp);) {
		if (u->gen <= gen) {
			*pp = u->next;
			free(u->old);
			free(u);
		} else
			pp = &u->next;
	}
	pthread_mutex_unlock(&d->fi_lock);
}

void dev_fi_env_check(void)
{
	/* built in: dev_open reads the switches */
}

#else /* !TDO_FAULT_INJECTION: the switches are not even read */

static void fi_init(struct dev *d)
{
	pthread_mutex_init(&d->fi_lock, NULL);
}

int dev_fi_before_write(struct dev *d, uint64_t off, size_t len)
{
	(void)d;
	(void)off;
	(void)len;
	return 0;
}

uint64_t dev_fi_sync_begin(struct dev *d)
{
	(void)d;
	return 0;
}

void dev_fi_sync_end(struct dev *d, uint64_t gen)
{
	(void)d;
	(void)gen;
}

void dev_fi_env_check(void)
{
	char names[256] = "";
	size_t n = 0;

	for (char **ep = environ; ep && *ep; ep++) {
		const char *eq = strchr(*ep, '=');
		size_t len = eq ? (size_t)(eq - *ep) : strlen(*ep);

		if (strncmp(*ep, "TDO_FAULT_", 10) || n + len + 3 >= sizeof names)
			continue;
		if (n) {
			memcpy(names + n, ", ", 2);
			n += 2;
		}
		memcpy(names + n, *ep, len);
		n += len;
		names[n] = 0;
	}
	if (n)
		tdo_log(TDO_LOG_WARN, "device", "%s ignored: this build has no fault injection "
		        "(only a library built with -DTDO_FAULT_INJECTION reads them)", names);
}
#endif

int dev_open(struct dev *d, const char *path, int backend, bool create, uint64_t create_size,
             bool direct)
{
	struct stat st;
	int flags = O_RDWR | O_CLOEXEC;
	int err;

	memset(d, 0, sizeof *d);
	d->fd = -1;
	d->backend = backend ? backend : TDO_BACKEND_FILE;
	fi_init(d);

	if (stat(path, &st) < 0) {
		if (errno != ENOENT || !create)
			return -errno;
		if (!create_size)
			return -EINVAL;
		flags |= O_CREAT | O_EXCL;
	} else if (S_ISBLK(st.st_mode)) {
		d->is_blockdev = 1;
	} else if (!S_ISREG(st.st_mode)) {
		return -EINVAL;
	}

	/* O_DIRECT for block devices, and for files when asked and the file
	 * system has it (tmpfs may not) */
	if (d->backend == TDO_BACKEND_FILE && (d->is_blockdev || direct)) {
		d->fd = open(path, flags | O_DIRECT, 0600);
		if (d->fd >= 0)
			d->direct = 1;
		else if (errno == EINVAL)
			flags &= ~O_EXCL; /* the failed attempt may have created it */
	}
	if (d->fd < 0)
		d->fd = open(path, flags, 0600);
	if (d->fd < 0)
		return -errno;
	/* A holder that was just killed lets go only once the I/O it had in
	 * the kernel (io_uring requests hold the file) has finished: that is
	 * also what makes it safe to go on, so wait a little for it. */
	for (int tries = 0;; tries++) {
		if (flock(d->fd, LOCK_EX | LOCK_NB) == 0)
			break;
		if (errno != EWOULDBLOCK || tries == LOCK_TRIES) {
			err = errno == EWOULDBLOCK ? TDO_ELOCKED : -errno;
			goto fail;
		}
		usleep(LOCK_WAIT_US);
	}
	if (flags & O_CREAT || (create && !d->is_blockdev && create_size &&
	                        (uint64_t)st.st_size < create_size)) {
		if (ftruncate(d->fd, (off_t)create_size) < 0) {
			err = -errno;
			goto fail;
		}
	}
	if (d->is_blockdev) {
		if (ioctl(d->fd, BLKGETSIZE64, &d->size) < 0) {
			err = -errno;
			goto fail;
		}
	} else {
		if (fstat(d->fd, &st) < 0) {
			err = -errno;
			goto fail;
		}
		d->size = (uint64_t)st.st_size;
	}

	if (d->backend == TDO_BACKEND_PMEM) {
		size_t mlen = 0;
		int is_pmem = 0;

		if (d->is_blockdev) {
			err = -EINVAL;
			goto fail;
		}
		d->pmem = pmem_map_file(path, 0, 0, 0, &mlen, &is_pmem);
		if (!d->pmem) {
			err = errno ? -errno : -EIO;
			tdo_log(TDO_LOG_ERROR, "device", "%s: pmem_map_file: %s", path, pmem_errormsg());
			goto fail;
		}
		d->pmem_len = mlen;
		d->pmem_is_pmem = is_pmem;
		return 0;
	}

	/* buffered file: scattered reads copy from a mapping (reader.c);
	 * none when TDO_NO_MAPPED_READS=1, without our SIGBUS handler in
	 * place (a page that cannot be read would kill the process), or
	 * when mmap fails */
	if (!d->direct && !d->is_blockdev && d->size && !tdo_env_on("TDO_NO_MAPPED_READS")) {
		if (bus_installed()) {
			void *m = mmap(NULL, d->size, PROT_READ, MAP_SHARED, d->fd, 0);

			d->map = m == MAP_FAILED ? NULL : m;
		} else {
			tdo_log(TDO_LOG_DEBUG, "device", "%s: no mapped reads: the SIGBUS handler is not installed "
			        "(tdo_engine_sigbus_install)", path);
		}
	}
	return 0;
fail:
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
	return err;
}

void dev_close(struct dev *d)
{
	struct fi_undo *u;

	if (d->pmem)
		pmem_unmap(d->pmem, d->pmem_len);
	d->pmem = NULL;
	if (d->map)
		munmap((void *)d->map, d->size);
	d->map = NULL;
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
	while ((u = d->fi_undo)) {
		d->fi_undo = u->next;
		free(u->old);
		free(u);
	}
	pthread_mutex_destroy(&d->fi_lock);
}

int dev_pread(struct dev *d, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	if (off + len > d->size || off + len < off)
		return -EINVAL;
	if (d->pmem) {
		memcpy(buf, d->pmem + off, len);
		return 0;
	}
	while (done < len) {
		ssize_t r = pread(d->fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0) {
			memset((char *)buf + done, 0, len - done);
			break;
		}
		done += (size_t)r;
	}
	return 0;
}

int dev_pwrite(struct dev *d, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	int err;

	if (off + len > d->size || off + len < off)
		return -EINVAL;
	err = dev_fi_before_write(d, off, len);
	if (err)
		return err;
	if (d->pmem) {
		pmem_memcpy_nodrain(d->pmem + off, buf, len);
		return 0;
	}
	while (done < len) {
		ssize_t r = pwrite(d->fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)r;
	}
	return 0;
}

int dev_sync(struct dev *d)
{
	uint64_t gen = dev_fi_sync_begin(d);
	int err = 0;

#ifdef TDO_FAULT_INJECTION
	if (d->fi_skip_sync)
		return 0; /* broken on purpose: nothing became durable */
#endif

	if (d->pmem) {
		if (d->pmem_is_pmem)
			pmem_drain();
		else if (pmem_msync(d->pmem, d->pmem_len) < 0)
			err = -errno;
	} else if (fdatasync(d->fd) < 0) {
		err = -errno;
	}
	if (!err)
		dev_fi_sync_end(d, gen);
	return err;
}
