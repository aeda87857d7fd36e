/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: io_uring on the loop thread, for the file backend. A read or a
 * log write (write linked to an fdatasync) becomes one or two submission
 * entries, given to the kernel at once (see submit_now), and completions
 * come back through an eventfd the loop polls. No worker thread and no
 * cross-thread handoff sits between a request and the device.
 *
 * When the kernel refuses io_uring (old kernel, seccomp, an environment
 * that sets TDO_NO_URING=1) or the backend is pmem, e->ur stays NULL and
 * the engine uses libuv's worker pool as before; both paths share the
 * code that builds and checks the data.
 *
 * Invariants: at most UR_DEPTH entries are in the kernel at once, so the
 * completion queue (twice that) never overflows; an op that finds no room
 * waits in FIFO order. An op's callback runs once, after every entry it
 * submitted has completed. A short read is continued where it stopped; a
 * read past the end of the file gives zeroes (as dev_pread does).
 *
 * Must never: block the loop (the eventfd is non-blocking), or run an op's
 * callback from inside ur_submit (callers may hold half-built state).
 */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

#define UR_DEPTH 256u

struct uring {
	struct io_uring ring;
	int efd;
	uv_poll_t poll;
	uv_prepare_t prep;
	struct tdo_engine *e;
	unsigned unsubmitted;       /* prepared, not yet given to the kernel */
	unsigned inkernel;          /* given, completion not reaped */
	struct tdo_list wait;           /* ops that found no room */
	int closing;                /* handles still to close */
	bool warned;                /* a submit failure was logged */
	void (*closed)(struct tdo_engine *e);
};

/* Entries OP still needs: the transfer unless it is complete, and for a
 * log write the fdatasync. */
static unsigned op_entries(const struct ur_op *op)
{
	return (op->done < op->len) + (op->kind == UR_WRITE_SYNC && op->sync);
}

static void prep_cb(uv_prepare_t *h);

/* Prepare OP's entries; false when the ring has no room for them now. */
static bool prep(struct uring *u, struct ur_op *op)
{
	struct io_uring_sqe *sqe;
	unsigned need = op_entries(op);
	int fd = u->e->dev.fd;

	if (u->inkernel + u->unsubmitted + need > UR_DEPTH || io_uring_sq_space_left(&u->ring) < need)
		return false;
	if (op->done < op->len) {
		sqe = io_uring_get_sqe(&u->ring);
		if (op->kind == UR_READ)
			io_uring_prep_read(sqe, fd, op->buf + op->done, op->len - op->done, op->off + op->done);
		else
			io_uring_prep_write(sqe, fd, op->buf + op->done, op->len - op->done, op->off + op->done);
		io_uring_sqe_set_data(sqe, op);
		if (need == 2)
			sqe->flags |= IOSQE_IO_LINK; /* the fdatasync runs only after it */
	}
	if (op->kind == UR_WRITE_SYNC && op->sync) {
		sqe = io_uring_get_sqe(&u->ring);
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		/* the low bit tells the fdatasync's completion apart */
		io_uring_sqe_set_data(sqe, (void *)((uintptr_t)op | 1));
	}
	op->cqes = need;
	u->unsubmitted += need;
	return true;
}

/*
 * Give the kernel what was prepared, now. One system call per request
 * costs a microsecond or two, and it is what keeps the device busy: a
 * loop turn's worth of reads sent as one plugged batch reaches the device
 * together, completes together, and the queue drains to empty before it
 * refills (measured on virtio: 66k against 80k reads/s at QD32). What
 * the kernel could not take now is sent from the prepare handle, before
 * the loop next sleeps.
 */
static void submit_now(struct uring *u)
{
	int r = u->unsubmitted ? io_uring_submit(&u->ring) : 0;

	if (r > 0) {
		u->inkernel += (unsigned)r;
		u->unsubmitted -= (unsigned)r; /* never more than was prepared */
	} else if (r < 0 && r != -EAGAIN && r != -EBUSY && r != -EINTR && !u->warned) {
		tdo_log(TDO_LOG_ERROR, "uring", "submit: %s (trying again each loop turn)", tdo_strerror(r));
		u->warned = true;
	}
	if (u->unsubmitted)
		uv_prepare_start(&u->prep, prep_cb);
	else
		uv_prepare_stop(&u->prep);
}

static void prep_cb(uv_prepare_t *h)
{
	submit_now(h->data);
}

static void drain_wait(struct uring *u)
{
	while (!tdo_list_empty(&u->wait)) {
		struct ur_op *op = tdo_list_item(u->wait.next, struct ur_op, link);
		if (!prep(u, op))
			break;
		tdo_list_del(&op->link);
	}
	submit_now(u);
}

/* Prepare OP, or let it wait its turn; the kernel gets it at the next
 * submit_now. */
static void queue(struct uring *u, struct ur_op *op)
{
	if (!tdo_list_empty(&u->wait) || !prep(u, op))
		tdo_list_add_tail(&u->wait, &op->link);
}

static void requeue(struct uring *u, struct ur_op *op)
{
	queue(u, op);
	submit_now(u);
}

/* One completion of OP; FSYNC says which entry. Runs the callback, or
 * queues the rest of a short transfer, once OP has no entry left. */
static void complete_entry(struct uring *u, struct ur_op *op, bool fsync, int res)
{
	if (!fsync) {
		if (res < 0) {
			if (!op->status && res != -EAGAIN && res != -EINTR)
				op->status = res; /* EAGAIN, EINTR: submitted again below */
		} else {
			if (res == 0 && op->kind == UR_READ) {
				memset(op->buf + op->done, 0, op->len - op->done); /* past the end */
				op->done = op->len;
			} else if (res == 0) {
				op->status = op->status ? op->status : -EIO; /* a write that writes nothing */
			} else {
				op->done += (uint32_t)res;
			}
		}
	} else if (res == 0) {
		op->sync = false; /* done: nothing left to sync */
	} else if (res != -ECANCELED && res != -EAGAIN && res != -EINTR && !op->status) {
		op->status = res; /* a failed flush is never retried */
	}
	if (--op->cqes)
		return;
	if (!op->status && op_entries(op)) {
		/* short or interrupted, or the fdatasync was cancelled because
		 * its write came up short: go on from where it stopped */
		requeue(u, op);
		return;
	}
	if (op->kind == UR_WRITE_SYNC && !op->status && !u->e->dev.fi_skip_sync)
		dev_fi_sync_end(&u->e->dev, op->fi_gen);
	op->cb(op);
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
	struct uring *u = h->data;
	struct io_uring_cqe *cqe;
	uint64_t n;
	/* only what is there now: a callback's new request may complete
	 * inline (a page-cache hit) and its completion waits for the next
	 * turn (the eventfd is signalled again), so timers and sockets get
	 * their turn too */
	unsigned budget;

	(void)status;
	(void)events;
	if (read(u->efd, &n, sizeof n) < 0 && errno != EAGAIN)
		tdo_log(TDO_LOG_WARN, "uring", "eventfd: %s", tdo_strerror(-errno));
	budget = io_uring_cq_ready(&u->ring);
	while (budget-- && io_uring_peek_cqe(&u->ring, &cqe) == 0) {
		uintptr_t tag = (uintptr_t)io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		io_uring_cqe_seen(&u->ring, cqe);
		u->inkernel--;
		complete_entry(u, (struct ur_op *)(tag & ~(uintptr_t)1), tag & 1, res);
	}
	drain_wait(u);
}

void ur_init(struct tdo_engine *e)
{
	struct uring *u;
	int r;

	if (e->dev.pmem || tdo_env_on("TDO_NO_URING"))
		return;
	u = calloc(1, sizeof *u);
	if (!u)
		return;
	u->e = e;
	tdo_list_init(&u->wait);
	r = io_uring_queue_init(UR_DEPTH, &u->ring, 0);
	if (r < 0) {
		tdo_log(TDO_LOG_INFO, "uring", "io_uring unavailable (%s): reads and log writes use worker threads",
		        tdo_strerror(r));
		free(u);
		return;
	}
	u->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (u->efd < 0 || (r = io_uring_register_eventfd(&u->ring, u->efd)) < 0) {
		r = u->efd < 0 ? -errno : r;
		goto fail;
	}
	if ((r = uv_poll_init(e->loop, &u->poll, u->efd)))
		goto fail;
	u->poll.data = u;
	uv_prepare_init(e->loop, &u->prep);
	u->prep.data = u;
	uv_poll_start(&u->poll, UV_READABLE, poll_cb);
	e->ur = u;
	return;
fail:
	tdo_log(TDO_LOG_WARN, "uring", "setting up io_uring: %s; worker threads do the I/O", tdo_strerror(r));
	if (u->efd >= 0)
		close(u->efd);
	io_uring_queue_exit(&u->ring);
	free(u);
}

int ur_submit(struct tdo_engine *e, struct ur_op *op, bool more)
{
	struct uring *u = e->ur;
	int err = 0;

	op->status = 0;
	op->done = 0;
	op->fi_gen = 0;
	op->sync = false;
	tdo_list_init(&op->link);
	if (op->off + op->len > e->dev.size || op->off + op->len < op->off)
		err = -EINVAL;
	else if (op->kind == UR_WRITE_SYNC && !(err = dev_fi_before_write(&e->dev, op->off, op->len))) {
		op->sync = !e->dev.fi_skip_sync;
		op->fi_gen = dev_fi_sync_begin(&e->dev);
	}
	if (!err)
		queue(u, op);
	/* what earlier calls with MORE prepared goes now, even on an error */
	if (err || !more)
		submit_now(u);
	return err;
}

static void handle_closed(uv_handle_t *h)
{
	struct uring *u = h->data;

	if (--u->closing)
		return;
	close(u->efd);
	io_uring_queue_exit(&u->ring);
	u->e->ur = NULL;
	u->closed(u->e);
	free(u);
}

void ur_close(struct tdo_engine *e, void (*closed)(struct tdo_engine *e))
{
	struct uring *u = e->ur;

	u->closed = closed;
	u->closing = 2;
	uv_close((uv_handle_t *)&u->poll, handle_closed);
	uv_close((uv_handle_t *)&u->prep, handle_closed);
}
