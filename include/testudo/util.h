/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small pieces every tier uses: the one-line logger, size parsing and
 * formatting, checksums.
 */
#ifndef TESTUDO_UTIL_H
#define TESTUDO_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tdo_log_level { TDO_LOG_ERROR = 0, TDO_LOG_WARN, TDO_LOG_INFO, TDO_LOG_DEBUG };

/* Messages at or below LEVEL go to standard error (default: INFO). */
void tdo_log_set_level(int level);
int tdo_log_get_level(void);
/* One line per event: "LEVEL component: message". Thread-safe. */
void tdo_log(int level, const char *component, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * "4096", "64K", "1.5G", "2T" (powers of 1024; a trailing "B" or "iB" is
 * accepted). Returns 0, or -EINVAL for anything else (empty, negative,
 * junk, overflow).
 */
int tdo_parse_size(const char *s, uint64_t *out);
/* "1.5 GiB" into BUF; returns BUF. */
char *tdo_format_size(uint64_t bytes, char *buf, size_t len);

/* xxh3-64 of a buffer; the engine's only checksum. */
uint64_t tdo_csum(const void *p, size_t len);
/* xxh3-64 of A followed by B, without copying them together. */
uint64_t tdo_csum_two(const void *a, size_t alen, const void *b, size_t blen);

/* Monotonic microseconds. */
uint64_t tdo_now_usec(void);

/* True when S is 1..MAX characters of [A-Za-z0-9._-]: the alphabet of
 * volume names and node ids (tdo_vol_name_valid, tdo_node_id_valid). */
bool tdo_name_chars_ok(const char *s, size_t max);

/* Is environment variable NAME set to 1? (The test and tuning switches:
 * TDO_NO_URING, TDO_NO_MAPPED_READS, and TDO_FAULT_SKIP_SYNC in a
 * fault-injection build.) */
bool tdo_env_on(const char *name);

#endif
