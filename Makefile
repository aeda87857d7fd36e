# SPDX-License-Identifier: Apache-2.0
# Testudo build. `make` builds into build/; `make check` runs every test,
# then the same tests again built with AddressSanitizer + UBSan.

CC      ?= cc
SANITIZER ?=
BUILD   ?= build
PREFIX  ?= /usr/local

WARN    := -Wall -Wextra -Wshadow -Wvla -Wstrict-prototypes -Werror
CFLAGS  ?= -O2 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE $(WARN) -Iinclude -MMD -MP
LDLIBS  := -luv -luring -llz4 -lxxhash -lpmem -lpthread -lm

ifneq ($(SANITIZER),)
override CFLAGS += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
override LDFLAGS += -fsanitize=$(SANITIZER)
endif

STORAGE_SRC := $(wildcard storage/*.c)
# x86-64: checksums use an AVX2 build of xxh3 when the CPU has it (util.c)
ifneq ($(findstring x86_64,$(shell $(CC) -dumpmachine)),)
override CFLAGS += -DTDO_CSUM_AVX2
$(BUILD)/storage/csum_avx2.o: override CFLAGS += -mavx2
$(BUILD)/fault/storage/csum_avx2.o: override CFLAGS += -mavx2
endif
STORAGE_OBJ := $(STORAGE_SRC:%.c=$(BUILD)/%.o)
# the same sources with fault injection compiled in (storage/internal.h)
STORAGE_FAULT_OBJ := $(STORAGE_SRC:%.c=$(BUILD)/fault/%.o)
SERVER_SRC  := $(wildcard server/*.c) $(wildcard replication/*.c)
SERVER_OBJ  := $(SERVER_SRC:%.c=$(BUILD)/%.o)
TOOLS_SRC   := $(wildcard tools/*.c)
TOOLS_OBJ   := $(TOOLS_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC    := $(wildcard tests/unit/*.c)
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%)
TESTPROG_SRC:= $(wildcard tests/prog/*.c)
TESTPROG_BIN:= $(TESTPROG_SRC:tests/prog/%.c=$(BUILD)/tests/%)
BENCHPROG_SRC := $(wildcard bench/prog/*.c)
BENCHPROG_BIN := $(BENCHPROG_SRC:bench/prog/%.c=$(BUILD)/bench/%)
TB_SRC      := $(wildcard bench/testudo-bench/*.c)
TB_OBJ      := $(TB_SRC:%.c=$(BUILD)/%.o)

LIBSTORAGE := $(BUILD)/libtestudo-storage.a
# TDO_FAULT_* (power cuts, write errors, skipped syncs) work only in this
# one: the torture program links it; testudod, testudo and testudo-bench
# link the one above, which ignores them and says so
LIBSTORAGE_FAULT := $(BUILD)/libtestudo-storage-fault.a
# the daemon's NBD code without main.c and the admin endpoint, for the fuzz harness
NBD_LIB_OBJ := $(filter-out $(BUILD)/server/main.o $(BUILD)/server/admin%.o $(BUILD)/server/http%.o,$(SERVER_OBJ))
FUZZ_SECONDS ?= 60

.PHONY: all unit suite check check-cluster check-one deps install clean crash-test bench-engine bench-nbd bench-accuracy bench-replication demo fuzz e2e-kernel
all: $(BUILD)/testudo $(BUILD)/testudod $(BUILD)/testudo-bench $(TESTPROG_BIN) $(BENCHPROG_BIN) $(BUILD)/tests/nbd_fuzz

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIBSTORAGE): $(STORAGE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/fault/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DTDO_FAULT_INJECTION -c $< -o $@

$(LIBSTORAGE_FAULT): $(STORAGE_FAULT_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/testudo: $(TOOLS_OBJ) $(LIBSTORAGE)
	$(CC) $(LDFLAGS) -o $@ $(TOOLS_OBJ) $(LIBSTORAGE) $(LDLIBS) -ljansson

# jansson parses the admin API's JSON bodies (daemon and CLI): a small,
# well-kept Debian library beats a hand-written JSON parser on untrusted input.
$(BUILD)/testudod: $(SERVER_OBJ) $(LIBSTORAGE)
	$(CC) $(LDFLAGS) -o $@ $(SERVER_OBJ) $(LIBSTORAGE) $(LDLIBS) -ljansson

# the NBD load generator and witness; it uses only util.c from the engine library
$(BUILD)/testudo-bench: $(TB_OBJ) $(LIBSTORAGE)
	$(CC) $(LDFLAGS) -o $@ $(TB_OBJ) $(LIBSTORAGE) $(LDLIBS)

$(BUILD)/tests/unit/test_bench: tests/unit/test_bench.c $(filter-out %/main.o,$(TB_OBJ)) $(LIBSTORAGE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ibench/testudo-bench -o $@ $(filter %.c %.o %.a,$^) $(LDFLAGS) $(LDLIBS) -lcmocka

# the admin endpoint's HTTP parser on its own: it is pure, so nothing else is linked
$(BUILD)/tests/unit/test_http: tests/unit/test_http.c $(BUILD)/server/http_parse.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iserver -o $@ $(filter %.c %.o,$^) $(LDFLAGS) -lcmocka

# the NBD request validator on its own: it is pure, so nothing else is linked
$(BUILD)/tests/unit/test_nbd_validate: tests/unit/test_nbd_validate.c $(BUILD)/server/nbd_validate.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iserver -o $@ $(filter %.c %.o,$^) $(LDFLAGS) -lcmocka

# the per-volume counters on their own: metrics.c needs only libc
$(BUILD)/tests/unit/test_metrics: tests/unit/test_metrics.c $(BUILD)/server/metrics.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iserver -o $@ $(filter %.c %.o,$^) $(LDFLAGS) -lcmocka

# the rules of a volume configuration on their own (replication/vconf.c is
# pure); peer.c brings tdo_node_id_valid, and net.c what peer.c needs
$(BUILD)/tests/unit/test_vconf: tests/unit/test_vconf.c $(BUILD)/replication/vconf.o $(BUILD)/replication/peer.o \
		$(BUILD)/replication/net.o $(LIBSTORAGE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ireplication -o $@ $(filter %.c %.o %.a,$^) $(LDFLAGS) $(LDLIBS) -lcmocka

$(BUILD)/tests/unit/%: tests/unit/%.c $(LIBSTORAGE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Istorage -o $@ $< $(LIBSTORAGE) $(LDFLAGS) $(LDLIBS) -lcmocka

$(BUILD)/tests/%: tests/prog/%.c $(LIBSTORAGE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Istorage -o $@ $< $(LIBSTORAGE) $(LDFLAGS) $(LDLIBS)

# power cuts and failed writes: the fault-injection library
$(BUILD)/tests/torture: tests/prog/torture.c $(LIBSTORAGE_FAULT)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Istorage -o $@ $< $(LIBSTORAGE_FAULT) $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/nbd_fuzz: tests/fuzz/nbd_fuzz.c $(NBD_LIB_OBJ) $(LIBSTORAGE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iserver -o $@ $< $(NBD_LIB_OBJ) $(LIBSTORAGE) $(LDFLAGS) $(LDLIBS) -ljansson

# libFuzzer over the NBD parsers for FUZZ_SECONDS; new inputs that reach
# new code are merged into tests/fuzz/corpus (commit them).
fuzz:
	$(MAKE) CC=clang BUILD=build/fuzz SANITIZER=address,undefined,fuzzer-no-link CFLAGS="-O1 -g" build/fuzz/libtestudo-storage.a $(NBD_LIB_OBJ:$(BUILD)/%=build/fuzz/%)
	clang -std=c11 -D_GNU_SOURCE -O1 -g -Iinclude -Iserver -DNBD_LIBFUZZER -fsanitize=fuzzer,address,undefined \
		-o build/fuzz/nbd_libfuzzer tests/fuzz/nbd_fuzz.c $(NBD_LIB_OBJ:$(BUILD)/%=build/fuzz/%) build/fuzz/libtestudo-storage.a $(LDLIBS) -ljansson
	mkdir -p build/fuzz/new
	build/fuzz/nbd_libfuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=10 build/fuzz/new tests/fuzz/corpus
	build/fuzz/nbd_libfuzzer -merge=1 tests/fuzz/corpus build/fuzz/new

$(BUILD)/bench/%: bench/prog/%.c $(LIBSTORAGE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Istorage -o $@ $< $(LIBSTORAGE) $(LDFLAGS) $(LDLIBS)

# Every test once against $(BUILD).
check-one: all $(UNIT_BIN)
	BUILD=$(BUILD) SANITIZER=$(SANITIZER) tests/run-all.sh

# The cmocka unit tests alone, in seconds: `make unit`, or one of them
# with `make unit T=test_index`.
unit: $(if $(T),$(BUILD)/tests/unit/$(T),$(UNIT_BIN))
	@set -e; d=$$(mktemp -d "$${TMPDIR:-/tmp}/testudo-unit.XXXXXX"); \
	for t in $^; do TMPDIR=$$d $$t || { rm -rf $$d; exit 1; }; done; rm -rf $$d

# One integration suite against $(BUILD) in a fresh scratch directory:
# `make suite S=nbd` runs tests/nbd.sh (admin, cli, cluster, nbd, bench,
# replication, enospc).
suite: all
	@test -n "$(S)" -a -f tests/$(S).sh || { echo "make suite S=NAME: one of $$(cd tests && ls *.sh | grep -v -e lib.sh -e run-all.sh | sed 's/\.sh$$//' | tr '\n' ' ')" >&2; exit 2; }
	d=$$(mktemp -d "$${TMPDIR:-/tmp}/testudo-$(S).XXXXXX") && BUILD=$(BUILD) tests/$(S).sh $$d/run

# The whole suite, plain and then under the sanitizers.
# The builds use every core (the tests inside run-all.sh run one at a time).
NPROC := $(shell nproc 2>/dev/null || echo 1)
check:
	@if command -v clang >/dev/null; then $(MAKE) -j$(NPROC) --no-print-directory CC=clang BUILD=build/clang all >/dev/null && echo "clang build: warning-free"; fi
	$(MAKE) -j$(NPROC) check-one
	$(MAKE) -j$(NPROC) check-one SANITIZER=address,undefined BUILD=build/asan CFLAGS="-O1 -g"

# The kernel's NBD client in a QEMU guest, every step, with the host's fio
# beside the guest's (check-one runs the short form).
e2e-kernel: all
	BUILD=$(BUILD) tests/e2e-kernel/run.sh --full --host-fio

# Replication under failure with FAILOVERS primary kills (check-one runs 3),
# and a replica SIGKILLed in its resync's copy phase 20 times (check-one: 3).
check-cluster: all
	BUILD=$(BUILD) FAILOVERS=$${FAILOVERS:-20} tests/replication.sh $${TMPDIR:-/tmp}/testudo-check-cluster
	BUILD=$(BUILD) ROUNDS=20 tests/resync_kill.sh $${TMPDIR:-/tmp}/testudo-check-cluster-rk

crash-test: all
	BUILD=$(BUILD) ITERATIONS=$${ITERATIONS:-500} tests/crash-test.sh

demo: all
	BUILD=$(BUILD) tools/demo.sh

bench-engine: all
	BUILD=$(BUILD) bench/engine

# testudod against nbdkit, qemu-nbd and nbd-server, through testudo-bench and fio
bench-nbd: all
	BUILD=$(BUILD) bench/nbd-compare

# testudo-bench's figures against fio's on one testudod volume
bench-accuracy: all
	BUILD=$(BUILD) bench/accuracy

bench-replication: all
	BUILD=$(BUILD) bench/replication

deps:
	tools/install-deps.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/testudo $(DESTDIR)$(PREFIX)/bin/testudo
	install -m 0755 $(BUILD)/testudod $(DESTDIR)$(PREFIX)/bin/testudod
	install -m 0755 $(BUILD)/testudo-bench $(DESTDIR)$(PREFIX)/bin/testudo-bench

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
