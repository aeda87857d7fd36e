/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the HTTP client of testudod's admin API, for the online commands.
 * One request, one reply, one blocking connection (Connection: close, read
 * to the end), under a connect timeout and an I/O timeout so that a hung
 * daemon cannot hang the command, and a reply over 64 MiB is refused. It
 * knows HTTP and the API's envelope (a 2xx with JSON, or {"error": ...}),
 * nothing of volumes: what a reply means is online.c's business. It must
 * never send a request twice (a POST is not idempotent), nor print anything
 * but one error line or, with --json, the daemon's reply as it came.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "internal.h"

#define ADMIN_CONNECT_MS     5000
#define ADMIN_IO_SECONDS     60
#define ADMIN_MAX_REPLY      (64u << 20)

/* "HOST:PORT", "[v6]:PORT" or ":PORT" (host 127.0.0.1). */
int admin_parse_addr(const char *s, struct admin_addr *a)
{
	const char *colon, *h = s;
	size_t hl;
	char *end;
	long port;

	a->text = s;
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':')
			return -EINVAL;
		h = s + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - s);
	}
	if (hl >= sizeof a->host)
		return -EINVAL;
	memcpy(a->host, h, hl);
	a->host[hl] = 0;
	if (!a->host[0])
		strcpy(a->host, "127.0.0.1");
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port <= 0 || port > 65535)
		return -EINVAL;
	snprintf(a->port, sizeof a->port, "%ld", port);
	return 0;
}

/* A connected, blocking socket to the daemon, or -1 after a one-line error. */
static int admin_connect(const struct admin_addr *a)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	int fd = -1, last = ECONNREFUSED, err;

	err = getaddrinfo(a->host, a->port, &hints, &res);
	if (err) {
		cli_die("cannot reach testudod at %s: %s", a->text, gai_strerror(err));
		return -1;
	}
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		struct timeval tv = { .tv_sec = ADMIN_IO_SECONDS };
		int soerr = 0;
		socklen_t sl = sizeof soerr;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
		if (fd < 0) {
			last = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			int r;
			if (errno != EINPROGRESS) {
				soerr = errno;
			} else {
				do
					r = poll(&p, 1, ADMIN_CONNECT_MS);
				while (r < 0 && errno == EINTR);
				if (r == 0)
					soerr = ETIMEDOUT;
				else if (r < 0)
					soerr = errno;
				else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
					soerr = errno;
			}
		}
		if (soerr) {
			last = soerr;
			close(fd);
			fd = -1;
			continue;
		}
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	}
	freeaddrinfo(res);
	if (fd < 0)
		cli_die("cannot reach testudod at %s: %s", a->text, strerror(last));
	return fd;
}

/*
 * One request, one reply, one connection (Connection: close, read to the
 * end). BODY may be NULL. Returns 0, or 1 after a one-line error.
 */
static int http_call(const struct admin_addr *a, const char *method, const char *path,
                     const char *body, struct admin_reply *r)
{
	char head[1024], hostport[300];
	size_t blen = body ? strlen(body) : 0, len = 0, cap = 0;
	const char *hend, *p;
	int fd, n;

	memset(r, 0, sizeof *r);
	if (strchr(a->host, ':'))
		snprintf(hostport, sizeof hostport, "[%s]:%s", a->host, a->port);
	else
		snprintf(hostport, sizeof hostport, "%s:%s", a->host, a->port);
	if (body)
		n = snprintf(head, sizeof head,
		             "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: testudo\r\nAccept: application/json\r\n"
		             "Connection: close\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
		             method, path, hostport, blen);
	else
		n = snprintf(head, sizeof head,
		             "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: testudo\r\nAccept: application/json\r\n"
		             "Connection: close\r\n\r\n",
		             method, path, hostport);
	if (n < 0 || (size_t)n >= sizeof head)
		return cli_die("request too long");
	fd = admin_connect(a);
	if (fd < 0)
		return 1;
	for (int part = 0; part < 2; part++) {
		const char *q = part ? body : head;
		size_t left = part ? blen : (size_t)n;
		while (left > 0) {
			ssize_t w = send(fd, q, left, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				int e = errno;
				close(fd);
				return cli_die("sending to testudod at %s: %s", a->text, strerror(e));
			}
			q += w;
			left -= (size_t)w;
		}
	}
	for (;;) {
		ssize_t got;
		if (cap - len < 4096) {
			char *np;
			if (cap >= ADMIN_MAX_REPLY) {
				close(fd);
				free(r->raw);
				return cli_die("the reply from testudod at %s is too large", a->text);
			}
			cap = cap ? cap * 2 : 16384;
			np = realloc(r->raw, cap + 1);
			if (!np) {
				close(fd);
				free(r->raw);
				return cli_die("out of memory");
			}
			r->raw = np;
		}
		got = recv(fd, r->raw + len, cap - len, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			int e = errno;
			close(fd);
			free(r->raw);
			if (e == EAGAIN || e == EWOULDBLOCK)
				return cli_die("testudod at %s did not answer within %d s", a->text, ADMIN_IO_SECONDS);
			return cli_die("reading from testudod at %s: %s", a->text, strerror(e));
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	close(fd);
	r->raw[len] = 0;
	if (len < 12 || memcmp(r->raw, "HTTP/1.", 7) || r->raw[8] != ' ' ||
	    sscanf(r->raw + 9, "%3d", &r->status) != 1 || !(hend = strstr(r->raw, "\r\n\r\n"))) {
		free(r->raw);
		r->raw = NULL;
		return cli_die("testudod at %s %s", a->text,
		           len ? "sent a malformed reply" : "closed the connection without a reply");
	}
	r->body = hend + 4;
	r->body_len = len - (size_t)(r->body - r->raw);
	for (p = strstr(r->raw, "\r\n"); p && p < hend; p = strstr(p + 2, "\r\n")) {
		if (strncasecmp(p + 2, "Content-Length:", 15) == 0) {
			unsigned long long cl = strtoull(p + 17, NULL, 10);
			if (cl > r->body_len) {
				free(r->raw);
				r->raw = NULL;
				return cli_die("the reply from testudod at %s was cut short", a->text);
			}
			r->body_len = (size_t)cl;
		}
	}
	return 0;
}

/*
 * The reply as JSON when the status is 2xx; otherwise print the daemon's
 * error message as one line and return NULL.
 */
static json_t *reply_json(const struct admin_addr *a, const struct admin_reply *r)
{
	json_error_t je;
	json_t *j = json_loadb(r->body, r->body_len, 0, &je);

	if (r->status < 200 || r->status > 299) {
		json_t *e = j ? json_object_get(j, "error") : NULL;
		if (json_is_string(e))
			cli_die("%s", json_string_value(e));
		else
			cli_die("testudod at %s answered HTTP %d", a->text, r->status);
		json_decref(j);
		return NULL;
	}
	if (!j)
		cli_die("testudod at %s sent invalid JSON: %s", a->text, je.text);
	return j;
}


/* --json: the daemon's JSON as it came. */
static void print_raw(const struct admin_reply *r)
{
	fwrite(r->body, 1, r->body_len, stdout);
	if (r->body_len == 0 || r->body[r->body_len - 1] != '\n')
		putchar('\n');
}

/* Send a request and take the reply's JSON; 0 or 1 (error printed). */
int admin_do(const struct admin_addr *a, const char *method, const char *path, const char *body,
             bool json, struct admin_reply *r, json_t **out)
{
	*out = NULL;
	if (http_call(a, method, path, body, r))
		return 1;
	*out = reply_json(a, r);
	if (!*out) {
		free(r->raw);
		return 1;
	}
	if (json)
		print_raw(r);
	return 0;
}
