/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The command line's internals, grouped by the file that defines them.
 * One thread, one command, then exit. "0 or 1" below means 0 on success,
 * else 1 after one error line on standard error: the exit status to return.
 */
#ifndef TESTUDO_TOOLS_INTERNAL_H
#define TESTUDO_TOOLS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* ---- testudo.c: main, usage, shared argument parsing ------------------- */

/* Print "testudo: MESSAGE" as one line on standard error; returns 1. */
int cli_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A SIZE argument with an optional K/M/G/T suffix (powers of 1024) into
 * *OUT; -1 after an error line that names it WHAT. */
int cli_parse_size(const char *what, const char *s, uint64_t *out);
/* A volume's SIZE argument: cli_parse_size(), then a positive multiple of
 * 512 bytes; 0 or 1. */
int cli_parse_vol_size(const char *arg, uint64_t *size);

/* ---- offline.c: the commands that open a device directly -------------- */

/* testudo format ARGV...: the exit status. */
int offline_format(int argc, char **argv);
/* testudo --device DEV volume ARGV...: the exit status. */
int offline_volume(const char *dev, int argc, char **argv);
/* testudo CMD ARGV..., CMD "inspect" or "check", on ARGV[0] or else DEV:
 * tdo_inspect()'s or tdo_check()'s result, 1 when no device is named, or 2
 * when the device cannot be read. */
int offline_inspect(const char *cmd, const char *dev, int argc, char **argv);

/* ---- admin_client.c: the HTTP client of testudod's admin API ---------- */

#define ADMIN_DEFAULT "127.0.0.1:10810"

struct admin_addr {
	const char *text;           /* as given, for messages */
	char host[256];
	char port[8];
};

/* One reply; the caller frees RAW. */
struct admin_reply {
	int status;
	char *raw;                  /* the whole reply, NUL-terminated */
	const char *body;           /* into raw */
	size_t body_len;
};

/* Parse "HOST:PORT", "[v6]:PORT" or ":PORT" (host 127.0.0.1) into A, which
 * keeps S for messages; 0 or -EINVAL, printing nothing. */
int admin_parse_addr(const char *s, struct admin_addr *a);
/* METHOD PATH with BODY (JSON, or NULL) to A; on 0, *OUT is the 2xx reply's
 * JSON (caller json_decref()s it and frees R->raw) and, with JSON, the reply
 * was printed as it came. 1 after an error line: nothing to free. */
int admin_do(const struct admin_addr *a, const char *method, const char *path, const char *body,
             bool json, struct admin_reply *r, json_t **out);

/* ---- online.c: the commands that go through the admin API ------------ */

/* testudo [--admin A] volume ARGV...: the exit status. */
int online_volume(const struct admin_addr *a, int argc, char **argv);
/* testudo [--admin A] status ARGV...: the exit status. */
int online_status(const struct admin_addr *a, int argc, char **argv);
/* testudo [--admin A] promote ARGV...: the exit status. */
int online_promote(const struct admin_addr *a, int argc, char **argv);

#endif
