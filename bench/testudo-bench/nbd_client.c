/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The bench's side of the NBD handshake. DESIGN: negotiation is short
 * and strictly sequential, so it is written as plain blocking code and
 * run on a libuv worker thread; the loop adopts the negotiated socket for
 * transmission. Every step is bounded by a timeout, and every length the
 * server sends is capped before it is read. Only simple replies are used
 * in transmission (no STRUCTURED_REPLY), as the kernel client does.
 */
#include <endian.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

/* %XX-decode SRC[0..N) into DST (size DSTLEN); -1 when it does not fit or is malformed */
static int pct_decode(const char *src, size_t n, char *dst, size_t dstlen)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = src[i];
		if (c == '%') {
			char hex[3] = { 0 };
			if (i + 2 >= n || !isxdigit((unsigned char)src[i + 1]) ||
			    !isxdigit((unsigned char)src[i + 2]))
				return -1;
			memcpy(hex, src + i + 1, 2);
			c = (char)strtoul(hex, NULL, 16);
			i += 2;
		}
		if (o + 1 >= dstlen || c == '\0')
			return -1;
		dst[o++] = c;
	}
	dst[o] = '\0';
	return 0;
}

int tb_uri_parse(const char *s, struct tb_uri *u, char *err, size_t errlen)
{
	memset(u, 0, sizeof(*u));
	if (strlen(s) >= sizeof(u->text))
		return fail(err, errlen, -EINVAL, "URI too long");
	strcpy(u->text, s);
	const char *p;
	if (!strncmp(s, "nbd+unix://", 11)) {
		u->unix_socket = true;
		p = s + 11;
		if (*p != '/')
			return fail(err, errlen, -EINVAL, "nbd+unix URIs have no host: nbd+unix:///EXPORT?socket=PATH");
		p++;
		const char *q = strchr(p, '?');
		if (!q)
			return fail(err, errlen, -EINVAL, "nbd+unix URI without ?socket=PATH");
		if (pct_decode(p, (size_t)(q - p), u->export_name, sizeof(u->export_name)))
			return fail(err, errlen, -EINVAL, "bad export name");
		q++;
		const char *sock = NULL;
		for (const char *kv = q; kv && *kv; kv = strchr(kv, '&') ? strchr(kv, '&') + 1 : NULL)
			if (!strncmp(kv, "socket=", 7))
				sock = kv + 7;
		if (!sock)
			return fail(err, errlen, -EINVAL, "nbd+unix URI without socket=PATH");
		size_t sl = strcspn(sock, "&");
		if (pct_decode(sock, sl, u->path, sizeof(u->path)) || !u->path[0] ||
		    strlen(u->path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return fail(err, errlen, -EINVAL, "bad socket path");
		return 0;
	}
	if (!strncmp(s, "nbds", 4))
		return fail(err, errlen, -EINVAL, "TLS URIs (nbds://) are not supported");
	if (strncmp(s, "nbd://", 6))
		return fail(err, errlen, -EINVAL, "not an NBD URI (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)");
	p = s + 6;
	const char *slash = strchr(p, '/');
	const char *auth_end = slash ? slash : p + strlen(p);
	const char *host = p, *host_end, *port = NULL;
	if (*p == '[') {
		host = p + 1;
		host_end = memchr(host, ']', (size_t)(auth_end - host));
		if (!host_end)
			return fail(err, errlen, -EINVAL, "unterminated [IPv6 address]");
		if (host_end + 1 < auth_end) {
			if (host_end[1] != ':')
				return fail(err, errlen, -EINVAL, "junk after ]");
			port = host_end + 2;
		}
	} else {
		host_end = memchr(p, ':', (size_t)(auth_end - p));
		if (host_end)
			port = host_end + 1;
		else
			host_end = auth_end;
	}
	if (host_end == host || (size_t)(host_end - host) >= sizeof(u->host))
		return fail(err, errlen, -EINVAL, "missing or overlong host");
	memcpy(u->host, host, (size_t)(host_end - host));
	if (port) {
		size_t pl = (size_t)(auth_end - port);
		if (pl == 0 || pl >= sizeof(u->port) || strspn(port, "0123456789") < pl)
			return fail(err, errlen, -EINVAL, "bad port");
		memcpy(u->port, port, pl);
	} else {
		strcpy(u->port, "10809");
	}
	if (slash && pct_decode(slash + 1, strlen(slash + 1), u->export_name, sizeof(u->export_name)))
		return fail(err, errlen, -EINVAL, "bad export name");
	return 0;
}

/* read or write exactly N bytes; the socket has SO_RCVTIMEO/SO_SNDTIMEO */
static int xfer(int fd, void *buf, size_t n, bool out)
{
	char *p = buf;
	while (n) {
		ssize_t r = out ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		if (r == 0)
			return -ECONNRESET;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int dial(const struct tb_uri *u, int timeout_ms, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL, *ai;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct addrinfo unix_ai = { .ai_family = AF_UNIX, .ai_socktype = SOCK_STREAM,
				    .ai_addr = (struct sockaddr *)&sun, .ai_addrlen = sizeof(sun) };
	if (u->unix_socket) {
		strcpy(sun.sun_path, u->path);
		ai = &unix_ai;
	} else {
		int g = getaddrinfo(u->host, u->port, &hints, &res);
		if (g)
			return fail(err, errlen, -EHOSTUNREACH, "%s:%s: %s", u->host, u->port, gai_strerror(g));
		ai = res;
	}
	int rc = -ECONNREFUSED;
	for (; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
			rc = -errno;
			close(fd);
			continue;
		}
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int so = 0;
		socklen_t sl = sizeof(so);
		int pr = poll(&pfd, 1, timeout_ms);
		if (pr <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) < 0 || so) {
			rc = pr == 0 ? -ETIMEDOUT : so ? -so : -errno;
			close(fd);
			continue;
		}
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (!u->unix_socket) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		if (res)
			freeaddrinfo(res);
		return fd;
	}
	if (res)
		freeaddrinfo(res);
	return fail(err, errlen, rc, "connect %s: %s", u->text, strerror(-rc));
}

static int send_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
	struct nbd_opt_hdr h = { htobe64(NBD_IHAVEOPT), htobe32(opt), htobe32(len) };
	int rc = xfer(fd, &h, sizeof(h), true);
	return rc ? rc : len ? xfer(fd, (void *)data, len, true) : 0;
}

static int negotiate(int fd, const struct tb_uri *u, struct tb_export *ex, char *err, size_t errlen)
{
	struct nbd_greeting hello;
	int rc = xfer(fd, &hello, sizeof(hello), false);
	if (rc)
		return fail(err, errlen, rc, "%s: no greeting: %s", u->text, strerror(-rc));
	if (be64toh(hello.gr_magic) != NBD_MAGIC)
		return fail(err, errlen, -EPROTO, "%s: not an NBD server", u->text);
	if (be64toh(hello.gr_opt_magic) != NBD_IHAVEOPT)
		return fail(err, errlen, -EPROTO, "%s: oldstyle NBD servers are not supported", u->text);
	uint16_t sflags = be16toh(hello.gr_flags);
	if (!(sflags & NBD_FLAG_FIXED_NEWSTYLE))
		return fail(err, errlen, -EPROTO, "%s: server is not fixed newstyle", u->text);
	bool no_zeroes = sflags & NBD_FLAG_NO_ZEROES;
	uint32_t cflags = htobe32(NBD_FLAG_C_FIXED_NEWSTYLE | (no_zeroes ? NBD_FLAG_C_NO_ZEROES : 0));
	if ((rc = xfer(fd, &cflags, 4, true)))
		return fail(err, errlen, rc, "%s: handshake: %s", u->text, strerror(-rc));

	size_t nl = strlen(u->export_name);
	char go[4 + sizeof(u->export_name) + 2];
	uint32_t nlbe = htobe32((uint32_t)nl);
	memcpy(go, &nlbe, 4);
	memcpy(go + 4, u->export_name, nl);
	memset(go + 4 + nl, 0, 2);     /* no information requests */
	if ((rc = send_opt(fd, NBD_OPT_GO, go, (uint32_t)(4 + nl + 2))))
		return fail(err, errlen, rc, "%s: handshake: %s", u->text, strerror(-rc));
	bool have_export = false;
	for (int replies = 0; replies < 64; replies++) {
		struct nbd_opt_reply r;
		if ((rc = xfer(fd, &r, sizeof(r), false)))
			return fail(err, errlen, rc, "%s: handshake: %s", u->text, strerror(-rc));
		uint32_t type = be32toh(r.or_type), len = be32toh(r.or_length);
		if (be64toh(r.or_magic) != NBD_REP_MAGIC || be32toh(r.or_option) != NBD_OPT_GO || len > 65536)
			return fail(err, errlen, -EPROTO, "%s: malformed option reply", u->text);
		char data[65537];
		if ((rc = xfer(fd, data, len, false)))
			return fail(err, errlen, rc, "%s: handshake: %s", u->text, strerror(-rc));
		data[len] = '\0';
		if (type == NBD_REP_INFO && len >= sizeof(struct nbd_info_export)) {
			struct nbd_info_export ie;
			memcpy(&ie, data, sizeof(ie));
			if (be16toh(ie.ex_type) == NBD_INFO_EXPORT) {
				ex->size = be64toh(ie.ex_size);
				ex->flags = be16toh(ie.ex_flags);
				have_export = true;
			}
		} else if (type == NBD_REP_ACK) {
			if (!have_export)
				return fail(err, errlen, -EPROTO, "%s: GO acknowledged without NBD_INFO_EXPORT", u->text);
			return 0;
		} else if (type == NBD_REP_ERR_UNSUP) {
			break;          /* an old server: fall back to EXPORT_NAME */
		} else if (type & (1u << 31)) {
			int e = type == NBD_REP_ERR_UNKNOWN ? -ENOENT : -EACCES;
			return fail(err, errlen, e, "%s: export '%s' refused (%s%s%s)", u->text, u->export_name,
				    type == NBD_REP_ERR_UNKNOWN ? "unknown export" :
				    type == NBD_REP_ERR_TLS_REQD ? "TLS required" : "error",
				    len ? ": " : "", len ? data : "");
		}
	}
	if ((rc = send_opt(fd, NBD_OPT_EXPORT_NAME, u->export_name, (uint32_t)nl)))
		return fail(err, errlen, rc, "%s: handshake: %s", u->text, strerror(-rc));
	struct nbd_export_name_reply er;
	if ((rc = xfer(fd, &er, no_zeroes ? offsetof(struct nbd_export_name_reply, en_zeroes) : sizeof(er), false)))
		return fail(err, errlen, rc, "%s: export '%s' refused: %s", u->text, u->export_name, strerror(-rc));
	ex->size = be64toh(er.en_size);
	ex->flags = be16toh(er.en_flags);
	return 0;
}

int tb_nbd_connect(const struct tb_uri *u, int timeout_ms, struct tb_export *ex,
		   char *err, size_t errlen)
{
	int fd = dial(u, timeout_ms, err, errlen);
	if (fd < 0)
		return fd;
	int rc = negotiate(fd, u, ex, err, errlen);
	if (rc) {
		close(fd);
		return rc;
	}
	/* transmission runs on the loop: non-blocking, no timeouts */
	struct timeval tv = { 0, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}
