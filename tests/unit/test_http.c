/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the admin endpoint's HTTP request parser
 * (server/http_parse.c) on its own, no socket and no daemon: what it
 * accepts, what it refuses and with which status, that it waits for more
 * at every byte boundary, and that it reads nothing past the buffer it is
 * given (each input is parsed from an exact-size copy, for ASan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "admin.h"

/* http_parse() on an exact-size heap copy of S[0, len). */
static int parse_n(const char *s, size_t len, struct http_req *r, const char **why)
{
	char *copy = malloc(len ? len : 1);
	int n;

	assert_non_null(copy);
	memcpy(copy, s, len);
	*why = NULL;
	n = http_parse(copy, len, r, why);
	free(copy);
	if (n < 0)
		assert_non_null(*why);   /* every refusal says why */
	return n;
}

static int parse(const char *s, struct http_req *r)
{
	const char *why;

	return parse_n(s, strlen(s), r, &why);
}

/* The status S is refused with (0 when it is accepted or incomplete). */
static int refusal(const char *s)
{
	struct http_req r;
	int n = parse(s, &r);

	return n < 0 ? -n : 0;
}

static void assert_target(const struct http_req *r, const char *buf, const char *want)
{
	assert_int_equal(r->target_len, strlen(want));
	assert_memory_equal(buf + r->target_off, want, r->target_len);
}

/* ---- accepted ---- */

static void test_get_is_parsed(void **st)
{
	static const char req[] = "GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n";
	struct http_req r;

	(void)st;
	assert_int_equal(parse(req, &r), sizeof req - 1);
	assert_string_equal(r.method, "GET");
	assert_target(&r, req, "/v1/status");
	assert_int_equal(r.minor, 1);
	assert_int_equal(r.head_len, sizeof req - 1);
	assert_int_equal(r.body_len, 0);
	assert_true(r.keep_alive);
	assert_false(r.expect_continue);
}

static void test_body_follows_the_head(void **st)
{
	static const char req[] = "POST /v1/volumes HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
	struct http_req r;
	int n;

	(void)st;
	n = parse(req, &r);
	assert_int_equal(n, sizeof req - 1 - 5);
	assert_int_equal(r.body_len, 5);
	assert_memory_equal(req + n, "hello", 5);
}

static void test_pipelined_requests_one_at_a_time(void **st)
{
	static const char in[] =
		"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
		"PUT /b?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
		"DELETE /c HTTP/1.0\r\n\r\n";
	static const char *const method[] = { "GET", "PUT", "DELETE" };
	static const char *const target[] = { "/a", "/b?x=1", "/c" };
	size_t off = 0;
	struct http_req r;
	const char *why;

	(void)st;
	for (int i = 0; i < 3; i++) {
		int n = parse_n(in + off, sizeof in - 1 - off, &r, &why);
		assert_true(n > 0);
		assert_string_equal(r.method, method[i]);
		assert_target(&r, in + off, target[i]);
		off += (size_t)n + r.body_len;
	}
	assert_int_equal(off, sizeof in - 1);
	assert_int_equal(parse_n(in + off, 0, &r, &why), 0);
}

/* Every prefix of a request is "not yet", until the head is whole. */
static void test_every_split_waits_for_the_head(void **st)
{
	static const char req[] =
		"POST /v1/volumes/a%2Db HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n"
		"Expect: 100-continue\r\nContent-Length: 4\r\n\r\nbody";
	size_t head = sizeof req - 1 - 4;
	struct http_req r;
	const char *why;

	(void)st;
	for (size_t k = 0; k <= sizeof req - 1; k++) {
		int n = parse_n(req, k, &r, &why);
		if (k < head) {
			assert_int_equal(n, 0);
		} else {
			assert_int_equal(n, head);
			assert_int_equal(r.body_len, 4);
			assert_true(r.expect_continue);
		}
	}
}

static void test_head_of_exactly_the_limit_is_accepted(void **st)
{
	static const char start[] = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ";
	size_t len = HTTP_MAX_HEAD, pad = len - (sizeof start - 1) - 4;
	char *req = malloc(len + 1);
	struct http_req r;
	const char *why;

	(void)st;
	assert_non_null(req);
	memcpy(req, start, sizeof start - 1);
	memset(req + sizeof start - 1, 'a', pad);
	memcpy(req + len - 4, "\r\n\r\n", 4);
	assert_int_equal(parse_n(req, len, &r, &why), (int)len);
	/* one byte more of padding, and the blank line ends past the limit */
	memmove(req + len - 3, req + len - 4, 4);
	req[len - 4] = 'a';
	assert_int_equal(parse_n(req, len + 1, &r, &why), -431);
	free(req);
}

static void test_content_length_at_the_limit_is_accepted(void **st)
{
	char req[128];
	struct http_req r;

	(void)st;
	snprintf(req, sizeof req, "PUT /v HTTP/1.1\r\nHost: h\r\nContent-Length: %u\r\n\r\n", HTTP_MAX_BODY);
	assert_true(parse(req, &r) > 0);
	assert_int_equal(r.body_len, HTTP_MAX_BODY);
}

static void test_content_length_whitespace_and_zeros(void **st)
{
	struct http_req r;

	(void)st;
	assert_true(parse("PUT /v HTTP/1.1\r\nHost: h\r\ncontent-length: \t 007 \t\r\n\r\n", &r) > 0);
	assert_int_equal(r.body_len, 7);
}

static void test_http_1_0_needs_no_host(void **st)
{
	struct http_req r;

	(void)st;
	assert_true(parse("GET / HTTP/1.0\r\n\r\n", &r) > 0);
	assert_int_equal(r.minor, 0);
	assert_false(r.keep_alive);
}

static void test_connection_header_decides_keep_alive(void **st)
{
	struct http_req r;

	(void)st;
	assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &r) > 0);
	assert_false(r.keep_alive);
	assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, Keep-Alive\r\n\r\n", &r) > 0);
	assert_true(r.keep_alive);
	assert_true(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r) > 0);
	assert_true(r.keep_alive);
	assert_true(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: CLOSE\r\n\r\n", &r) > 0);
	assert_false(r.keep_alive);
}

static void test_tab_in_a_header_value_is_accepted(void **st)
{
	struct http_req r;

	(void)st;
	assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nX-Note: a\tb\r\n\r\n", &r) > 0);
}

static void test_result_is_reset_each_call(void **st)
{
	struct http_req r;

	(void)st;
	assert_true(parse("PUT /v HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n", &r) > 0);
	assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n", &r) > 0);
	assert_int_equal(r.body_len, 0);
	assert_false(r.expect_continue);
}

/* ---- refused ---- */

static void test_head_over_the_limit_without_its_end(void **st)
{
	size_t len = HTTP_MAX_HEAD;
	char *req = malloc(len);
	struct http_req r;
	const char *why;

	(void)st;
	assert_non_null(req);
	memcpy(req, "GET / HTTP/1.1\r\nX: ", 19);
	memset(req + 19, 'a', len - 19);
	assert_int_equal(parse_n(req, len - 1, &r, &why), 0);
	assert_int_equal(parse_n(req, len, &r, &why), -431);
	free(req);
}

static void test_too_many_header_fields(void **st)
{
	char req[8192];
	size_t o;
	struct http_req r;
	const char *why;

	(void)st;
	o = (size_t)snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (int i = 1; i < HTTP_MAX_HEADERS; i++)
		o += (size_t)snprintf(req + o, sizeof req - o, "X-%d: v\r\n", i);
	memcpy(req + o, "\r\n", 2);
	assert_true(parse_n(req, o + 2, &r, &why) > 0);     /* HTTP_MAX_HEADERS fields */
	o += (size_t)snprintf(req + o, sizeof req - o, "X-last: v\r\n\r\n");
	assert_int_equal(parse_n(req, o, &r, &why), -431);
}

static void test_body_over_the_limit(void **st)
{
	char req[128];

	(void)st;
	snprintf(req, sizeof req, "PUT /v HTTP/1.1\r\nHost: h\r\nContent-Length: %u\r\n\r\n", HTTP_MAX_BODY + 1);
	assert_int_equal(refusal(req), 413);
}

static void test_content_length_overflow(void **st)
{
	(void)st;
	/* 2^64 and 2^64 + 5 would wrap to 0 and 5 */
	assert_int_equal(refusal("PUT /v HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n"), 413);
	assert_int_equal(refusal("PUT /v HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551621\r\n\r\n"), 413);
}

static void test_content_length_negative(void **st)
{
	(void)st;
	assert_int_equal(refusal("PUT /v HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"), 400);
}

static void test_content_length_not_digits(void **st)
{
	static const char *const bad[] = { "+5", "0x10", "1 0", "5,5", "12a", "" };
	char req[128];

	(void)st;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(req, sizeof req, "PUT /v HTTP/1.1\r\nHost: h\r\nContent-Length: %s\r\n\r\n", bad[i]);
		assert_int_equal(refusal(req), 400);
	}
}

static void test_content_length_duplicate(void **st)
{
	(void)st;
	/* even when the two agree: a request smuggler's tool */
	assert_int_equal(refusal("PUT /v HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"), 400);
}

static void test_transfer_encoding_not_implemented(void **st)
{
	(void)st;
	assert_int_equal(refusal("PUT /v HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"), 501);
}

static void test_host_missing_in_http_1_1(void **st)
{
	(void)st;
	assert_int_equal(refusal("GET / HTTP/1.1\r\n\r\n"), 400);
}

static void test_host_twice(void **st)
{
	(void)st;
	assert_int_equal(refusal("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), 400);
}

static void test_unknown_expectation(void **st)
{
	(void)st;
	assert_int_equal(refusal("PUT /v HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n"), 417);
}

static void test_malformed_request_lines(void **st)
{
	static const char *const bad[] = {
		"GET  / HTTP/1.1",        /* two spaces */
		"GET / HTTP/1.1 ",        /* a trailing space */
		"GET /",                  /* no version */
		"GET / HTTP/1.1 extra",
		"GET * HTTP/1.1",         /* not an absolute path */
		"GET http://h/ HTTP/1.1", /* absolute form */
		"GET / http/1.1",
		"GET / HTTP/1.x",
		"GET / HTTP/11",
		"GET /\x7f HTTP/1.1",
		"G@T / HTTP/1.1",
	};
	char req[128];

	(void)st;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(req, sizeof req, "%s\r\nHost: h\r\n\r\n", bad[i]);
		assert_int_equal(refusal(req), 400);
	}
}

static void test_other_http_versions(void **st)
{
	(void)st;
	assert_int_equal(refusal("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
	assert_int_equal(refusal("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
	assert_int_equal(refusal("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), 505);
}

static void test_method_too_long(void **st)
{
	(void)st;
	assert_int_equal(refusal("ABCDEFGHIJKLMNOPQRST / HTTP/1.1\r\nHost: h\r\n\r\n"), 501);
}

static void test_malformed_header_fields(void **st)
{
	static const char *const bad[] = {
		"Host h",                 /* no colon */
		"Host : h",               /* space before the colon */
		" Host: h",               /* obsolete line folding */
		": h",                    /* no name */
		"Ho(st: h",               /* not a token */
	};
	char req[128];

	(void)st;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(req, sizeof req, "GET / HTTP/1.0\r\n%s\r\n\r\n", bad[i]);
		assert_int_equal(refusal(req), 400);
	}
}

static void test_control_character_in_a_header_value(void **st)
{
	(void)st;
	assert_int_equal(refusal("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n"), 400);
	assert_int_equal(refusal("GET / HTTP/1.1\r\nHost: h\r\nX: a\nz\r\n\r\n"), 400);
}

/* Input that cannot become a request is refused before its head ends. */
static void test_not_http_refused_at_once(void **st)
{
	(void)st;
	assert_int_equal(refusal("\x16\x03\x01\x02"), 400);      /* a TLS client hello */
	assert_int_equal(refusal("{\"name\":"), 400);
	assert_int_equal(refusal("GET/v1 "), 400);
	assert_int_equal(refusal("GET / HTTP/1.1\n"), 400);      /* bare LF */
	assert_int_equal(refusal("GET / HTTP/3.0\r\nHost"), 505); /* the line is complete */
	assert_int_equal(refusal("GET / HTTP/1.1\r\nHost"), 0);   /* so far so good */
}

/* ---- empty lines and the request target ---- */

static void test_empty_lines_are_the_callers_to_skip(void **st)
{
	char many[200];

	(void)st;
	assert_int_equal(http_skip_empty_lines("\r\n\r\nGET", 7), 4);
	assert_int_equal(http_skip_empty_lines("\r", 1), 0);
	assert_int_equal(http_skip_empty_lines("\n\r\n", 3), 0);
	assert_int_equal(http_skip_empty_lines(NULL, 0), 0);
	for (size_t i = 0; i < sizeof many; i += 2)
		memcpy(many + i, "\r\n", 2);
	assert_int_equal(http_skip_empty_lines(many, sizeof many), 64);
	/* not skipped, an empty line is an empty request line; a CR alone waits */
	assert_int_equal(refusal("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
	assert_int_equal(refusal("\r\nGET"), 400);
	assert_int_equal(refusal("\r"), 0);
}

static void test_query_has(void **st)
{
	(void)st;
	assert_true(http_query_has("force=1", 7, "force=1"));
	assert_true(http_query_has("a=b&force=1&c", 13, "force=1"));
	assert_false(http_query_has("force=10", 8, "force=1"));
	assert_false(http_query_has("xforce=1", 8, "force=1"));
	assert_false(http_query_has("force=1", 6, "force=1"));   /* LEN bounds it */
	assert_false(http_query_has("", 0, "force=1"));
}

static void test_decode_segment(void **st)
{
	char out[8];

	(void)st;
	assert_int_equal(http_decode_segment("a%2Db%2e", 8, out, sizeof out), 0);
	assert_string_equal(out, "a-b.");
	assert_int_equal(http_decode_segment("1234567", 7, out, sizeof out), 0);   /* fits with the NUL */
	assert_int_equal(http_decode_segment("12345678", 8, out, sizeof out), -1);
	assert_int_equal(http_decode_segment("a%00", 4, out, sizeof out), -1);
	assert_int_equal(http_decode_segment("a%4", 3, out, sizeof out), -1);
	assert_int_equal(http_decode_segment("a%zz", 4, out, sizeof out), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_is_parsed),
		cmocka_unit_test(test_body_follows_the_head),
		cmocka_unit_test(test_pipelined_requests_one_at_a_time),
		cmocka_unit_test(test_every_split_waits_for_the_head),
		cmocka_unit_test(test_head_of_exactly_the_limit_is_accepted),
		cmocka_unit_test(test_content_length_at_the_limit_is_accepted),
		cmocka_unit_test(test_content_length_whitespace_and_zeros),
		cmocka_unit_test(test_http_1_0_needs_no_host),
		cmocka_unit_test(test_connection_header_decides_keep_alive),
		cmocka_unit_test(test_tab_in_a_header_value_is_accepted),
		cmocka_unit_test(test_result_is_reset_each_call),
		cmocka_unit_test(test_head_over_the_limit_without_its_end),
		cmocka_unit_test(test_too_many_header_fields),
		cmocka_unit_test(test_body_over_the_limit),
		cmocka_unit_test(test_content_length_overflow),
		cmocka_unit_test(test_content_length_negative),
		cmocka_unit_test(test_content_length_not_digits),
		cmocka_unit_test(test_content_length_duplicate),
		cmocka_unit_test(test_transfer_encoding_not_implemented),
		cmocka_unit_test(test_host_missing_in_http_1_1),
		cmocka_unit_test(test_host_twice),
		cmocka_unit_test(test_unknown_expectation),
		cmocka_unit_test(test_malformed_request_lines),
		cmocka_unit_test(test_other_http_versions),
		cmocka_unit_test(test_method_too_long),
		cmocka_unit_test(test_malformed_header_fields),
		cmocka_unit_test(test_control_character_in_a_header_value),
		cmocka_unit_test(test_not_http_refused_at_once),
		cmocka_unit_test(test_empty_lines_are_the_callers_to_skip),
		cmocka_unit_test(test_query_has),
		cmocka_unit_test(test_decode_segment),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
