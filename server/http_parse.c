/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DESIGN: the admin endpoint's HTTP/1.1 request parser, a pure function
 * over a byte buffer: no libuv, no daemon, no allocation, no log. http.c
 * feeds it the connection's input; tests/unit/test_http.c feeds it
 * anything.
 *
 * What: http_parse() takes the request line and headers at the start of
 * a buffer and says "complete, this long" (the body, framed only by
 * Content-Length, follows), "not yet" or "wrong, answer this status".
 * Input that cannot become a request is refused before its head is
 * complete: a first word that is not a method, a request line that does
 * not parse, lines ending in a bare LF. The request target's query and
 * path segments are read by http_query_has() and http_decode_segment().
 *
 * Why this way: strict and small rather than a library: one grammar, the
 * subset of RFC 9112 the admin API needs; what it does not know it
 * refuses (501 Transfer-Encoding, 417 an expectation but 100-continue,
 * 505 HTTP versions but 1.0 and 1.1). Pure, so every byte boundary and
 * every refusal can be tested without a socket.
 *
 * Must never: read outside buf[0, len), look past HTTP_MAX_HEAD bytes for
 * the end of a head, or accept a Content-Length that is not plain digits
 * at most HTTP_MAX_BODY (checked digit by digit, so it cannot overflow).
 */
#include <string.h>
#include <strings.h>

#include "admin.h"

static bool is_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Case-insensitive: does the header value list (comma-separated) hold TOKEN? */
static bool list_has(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token), i = 0;

	while (i < n) {
		size_t s, e;
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < n && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
			return true;
	}
	return false;
}

/*
 * The request line, P[0, n) at the start of the buffer: METHOD SP TARGET
 * SP HTTP/1.x, nothing else. Returns 0, or an HTTP status with *why set.
 */
static int parse_request_line(const char *p, size_t n, struct http_req *r, const char **why)
{
	size_t i = 0, m;

	while (i < n && is_tchar((unsigned char)p[i]))
		i++;
	if (i == 0 || i >= n || p[i] != ' ') {
		*why = "malformed request line";
		return 400;
	}
	if (i >= sizeof r->method) {
		*why = "method not implemented";
		return 501;
	}
	memcpy(r->method, p, i);
	r->method[i] = 0;
	m = ++i;
	while (i < n && p[i] > 0x20 && p[i] < 0x7f)
		i++;
	if (i == m || i >= n || p[i] != ' ') {
		*why = "malformed request target";
		return 400;
	}
	if (p[m] != '/') {
		*why = "the request target must be an absolute path";
		return 400;
	}
	r->target_off = m;
	r->target_len = i - m;
	i++;
	if (n - i == 8 && memcmp(p + i, "HTTP/1.", 7) == 0 && (p[i + 7] == '0' || p[i + 7] == '1')) {
		r->minor = p[i + 7] - '0';
		return 0;
	}
	if (n - i == 8 && memcmp(p + i, "HTTP/", 5) == 0 && p[i + 5] >= '0' && p[i + 5] <= '9' &&
	    p[i + 6] == '.' && p[i + 7] >= '0' && p[i + 7] <= '9') {
		*why = "only HTTP/1.0 and HTTP/1.1 are supported";
		return 505;
	}
	*why = "malformed HTTP version";
	return 400;
}

/*
 * Request line and headers, buf[0, r->head_len), which ends with the
 * blank line. Fills R; returns 0, or an HTTP status with *why set.
 */
static int parse_head(const char *buf, struct http_req *r, const char **why)
{
	const char *p = buf, *end = buf + r->head_len - 2; /* the last CRLF */
	const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
	bool have_cl = false, conn_close_tok = false, conn_keep = false;
	int host = 0, nhdr = 0, st;

	st = parse_request_line(p, (size_t)(eol - p), r, why);
	if (st)
		return st;
	for (p = eol + 2; p < end; p = eol + 2) {
		const char *name = p, *v, *ve;
		size_t nlen;

		eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		if (++nhdr > HTTP_MAX_HEADERS) {
			*why = "too many header fields";
			return 431;
		}
		while (p < eol && is_tchar((unsigned char)*p))
			p++;
		nlen = (size_t)(p - name);
		if (nlen == 0 || p == eol || *p != ':') {
			*why = "malformed header field";
			return 400;
		}
		v = p + 1;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		ve = eol;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		for (const char *q = v; q < ve; q++) {
			unsigned char ch = (unsigned char)*q;
			if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
				*why = "control character in a header field";
				return 400;
			}
		}
#define IS(h) (nlen == sizeof(h) - 1 && strncasecmp(name, h, nlen) == 0)
		if (IS("Content-Length")) {
			uint64_t len = 0;
			if (have_cl || v == ve) {
				*why = have_cl ? "more than one Content-Length" : "empty Content-Length";
				return 400;
			}
			have_cl = true;
			for (const char *q = v; q < ve; q++) {
				if (*q < '0' || *q > '9') {
					*why = "malformed Content-Length";
					return 400;
				}
				len = len * 10 + (uint64_t)(*q - '0');
				if (len > HTTP_MAX_BODY) {
					*why = "request body larger than 64 KiB";
					return 413;
				}
			}
			r->body_len = (size_t)len;
		} else if (IS("Transfer-Encoding")) {
			*why = "Transfer-Encoding is not supported; send a Content-Length";
			return 501;
		} else if (IS("Connection")) {
			conn_close_tok |= list_has(v, (size_t)(ve - v), "close");
			conn_keep |= list_has(v, (size_t)(ve - v), "keep-alive");
		} else if (IS("Expect")) {
			if ((size_t)(ve - v) != 12 || strncasecmp(v, "100-continue", 12) != 0) {
				*why = "unsupported expectation";
				return 417;
			}
			r->expect_continue = true;
		} else if (IS("Host")) {
			host++;
		}
#undef IS
	}
	if (r->minor == 1 && host != 1) {
		*why = host ? "more than one Host header" : "missing Host header";
		return 400;
	}
	r->keep_alive = r->minor == 1 ? !conn_close_tok : conn_keep && !conn_close_tok;
	return 0;
}

int http_parse(const char *buf, size_t len, struct http_req *out, const char **why)
{
	const char *hend, *eol;
	size_t k = 0;
	int st;

	memset(out, 0, sizeof *out);
	if (len == 0)
		return 0;
	hend = memmem(buf, len < HTTP_MAX_HEAD ? len : HTTP_MAX_HEAD, "\r\n\r\n", 4);
	if (hend) {
		out->head_len = (size_t)(hend - buf) + 4;
		st = parse_head(buf, out, why);
		return st ? -st : (int)out->head_len;
	}
	if (len >= HTTP_MAX_HEAD) {
		*why = "request line and headers larger than 16 KiB";
		return -431;
	}
	/* a request that cannot be HTTP is refused at once: a method is a
	 * token, and a complete request line must parse */
	while (k < len && k < sizeof out->method && is_tchar((unsigned char)buf[k]))
		k++;
	if (k < len && k < sizeof out->method && (k == 0 || buf[k] != ' ') && buf[0] != '\r') {
		*why = "malformed request line";
		return -400;
	}
	eol = memmem(buf, len, "\r\n", 2);
	if (eol && (st = parse_request_line(buf, (size_t)(eol - buf), out, why)))
		return -st;
	if (!eol && memchr(buf, '\n', len)) {
		*why = "lines must end with CRLF";
		return -400;
	}
	return 0;
}

size_t http_skip_empty_lines(const char *buf, size_t len)
{
	size_t skip = 0;

	while (len - skip >= 2 && buf[skip] == '\r' && buf[skip + 1] == '\n' && skip < 64)
		skip += 2;
	return skip;
}

/* ---- the request target ----------------------------------------------------- */

bool http_query_has(const char *q, size_t len, const char *param)
{
	size_t pl = strlen(param);

	while (len) {
		const char *amp = memchr(q, '&', len);
		size_t n = amp ? (size_t)(amp - q) : len;
		if (n == pl && memcmp(q, param, pl) == 0)
			return true;
		if (!amp)
			break;
		len -= n + 1;
		q = amp + 1;
	}
	return false;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int http_decode_segment(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (ch == '%') {
			int hi, lo;
			if (i + 2 >= n)
				return -1;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			ch = (char)(hi * 16 + lo);
			i += 2;
		}
		if (o + 1 >= outlen)
			return -1;
		out[o++] = ch;
	}
	out[o] = 0;
	return 0;
}
