# tokentrace: top-level build.
#
#   make            build everything into build/
#   make demo       reference server + load + tokentrace, then the report
#   make test       unit tests, then end-to-end tests (root for the eBPF ones)
#   make bench      benchmarks; they print figures
#   make soak       30 minutes of record under load; memory must stay flat
#   make fresh      `make demo` and `make test` inside a new minimal Debian 12
#                   root (debootstrap, chroot, no tracefs): the README's
#                   contract on a truly fresh system (root; not in make test)
#   make CUDA=1     also build the reference server's CUDA backend
#   make install    binary, CUPTI library and systemd unit (PREFIX, DESTDIR)
#
# Missing Debian packages are installed first by tools/deps.sh (as root).
# Library flags come from pkg-config; they are read lazily, after that step.

BUILD    := build
CC       := gcc
CLANG    := clang
BPFTOOL  := bpftool
CUDA_HOME ?= /usr/local/cuda
NVCC     := $(CUDA_HOME)/bin/nvcc
ARCH     := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

PKGS      = libbpf libelf libcjson libssl libcrypto libzstd zlib libmicrohttpd
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))

CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -Wall -Wextra -Wshadow -Wno-missing-field-initializers \
            -D_GNU_SOURCE -Iinclude -I$(BUILD) -MMD -MP
LDLIBS   += -lpthread -lm
SAN      ?=

# ---- sources ---------------------------------------------------------------

BPF_SRCS   := $(wildcard bpf/*.bpf.c)
BPF_OBJS   := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.bpf.o)
BPF_SKELS  := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/%.skel.h)

USER_SRCS  := $(wildcard user/*.c)
USER_OBJS  := $(USER_SRCS:%.c=$(BUILD)/%.o)
USER_LIB   := $(BUILD)/libtt.a

REF_SRCS   := $(wildcard tools/refserver/*.c)
REF_OBJS   := $(REF_SRCS:%.c=$(BUILD)/%.o)
REF_LIB    := $(BUILD)/librefserver.a

LG_SRCS    := $(wildcard tools/loadgen/*.c)
LG_OBJS    := $(LG_SRCS:%.c=$(BUILD)/%.o)
LG_LIB     := $(BUILD)/libloadgen.a

UNIT_SRCS  := $(wildcard tests/unit/*.c)
# Test objects go under build/tests/obj/, apart from the binaries
# build/tests/unit and build/tests/e2e (a folder cannot share their name).
UNIT_OBJS  := $(UNIT_SRCS:tests/%.c=$(BUILD)/tests/obj/%.o)
E2E_SRCS   := $(wildcard tests/e2e/*.c)
E2E_OBJS   := $(E2E_SRCS:tests/%.c=$(BUILD)/tests/obj/%.o)

# The CUPTI library builds where the CUDA toolkit is installed.
HAVE_CUPTI := $(shell test -f $(CUDA_HOME)/include/cupti.h && echo 1)
CUPTI_SRCS := $(wildcard cupti/*.c)
CUPTI_OBJS := $(CUPTI_SRCS:%.c=$(BUILD)/%.pic.o)
CUPTI_LIB  := $(BUILD)/libtokentrace_cupti.so
CUPTI_CFLAGS := -I$(CUDA_HOME)/include -fPIC -fvisibility=hidden
CUPTI_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcupti -ldl
CTEST_SRCS := $(wildcard tests/cupti/*.c)

# With the CUPTI headers the reference server gains simulated CUDA devices
# (--device sim), whose records go through the library's own conversion
# and transport code.
ifeq ($(HAVE_CUPTI),1)
REF_SIM_OBJS := $(addprefix $(BUILD)/cupti/,convert.pic.o names.pic.o \
		  transport.pic.o corr.pic.o)
$(REF_OBJS): CFLAGS += -DREFSERVER_SIM=1 -I$(CUDA_HOME)/include
endif

# The reference server's optional CUDA backend (make CUDA=1).
ifeq ($(CUDA),1)
REF_CU_SRCS := $(wildcard tools/refserver/*.cu)
REF_CU_OBJS := $(REF_CU_SRCS:%.cu=$(BUILD)/%.cu.o)
REF_CUDA_FLAGS := -DREFSERVER_CUDA=1
REF_CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lstdc++
endif

TARGETS := $(BUILD)/tokentrace $(BUILD)/refserver $(BUILD)/loadgen
ifeq ($(HAVE_CUPTI),1)
TARGETS += $(CUPTI_LIB)
endif

.PHONY: all deps deps-test demo test test-unit test-e2e test-cupti test-llama bench soak clean
# Generated BPF objects and skeletons are kept, not removed as intermediates.
.SECONDARY: $(BPF_OBJS) $(BPF_SKELS)
.DEFAULT_GOAL := all

all: $(TARGETS)
ifneq ($(HAVE_CUPTI),1)
	@echo "tokentrace: no CUDA toolkit at $(CUDA_HOME): skipping libtokentrace_cupti.so"
endif

deps:
	@tools/deps.sh

deps-test:
	@tools/deps.sh --test

# ---- kernel side -----------------------------------------------------------

# vmlinux.h is generated from the running kernel's BTF, never committed.
$(BUILD)/vmlinux.h: | deps
	@mkdir -p $(@D)
	@test -r /sys/kernel/btf/vmlinux || \
	  { echo "tokentrace: no BTF at /sys/kernel/btf/vmlinux: the kernel needs CONFIG_DEBUG_INFO_BTF=y" >&2; exit 1; }
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BUILD)/vmlinux.h $(wildcard include/tokentrace/*.h bpf/*.h) | deps
	@mkdir -p $(@D)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Iinclude -Ibpf -I$(BUILD) -c $< -o $@

$(BUILD)/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(BPFTOOL) gen skeleton $< > $@.tmp && mv $@.tmp $@

# ---- user side -------------------------------------------------------------

$(BUILD)/%.o: %.c | deps $(BPF_SKELS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) $(REF_CUDA_FLAGS) $(PKG_CFLAGS) -c $< -o $@

$(USER_LIB): $(filter-out $(BUILD)/user/main.o,$(USER_OBJS))
	@rm -f $@; ar rcs $@ $^
$(REF_LIB): $(filter-out $(BUILD)/tools/refserver/main.o,$(REF_OBJS)) $(REF_CU_OBJS) $(REF_SIM_OBJS)
	@rm -f $@; ar rcs $@ $^
$(LG_LIB): $(filter-out $(BUILD)/tools/loadgen/main.o,$(LG_OBJS))
	@rm -f $@; ar rcs $@ $^

$(BUILD)/tokentrace: $(BUILD)/user/main.o $(USER_LIB)
	$(CC) $(SAN) -o $@ $^ $(PKG_LIBS) $(LDLIBS)
$(BUILD)/refserver: $(BUILD)/tools/refserver/main.o $(REF_LIB)
	$(CC) $(SAN) -o $@ $^ $(PKG_LIBS) $(REF_CUDA_LIBS) $(LDLIBS)
$(BUILD)/loadgen: $(BUILD)/tools/loadgen/main.o $(LG_LIB)
	$(CC) $(SAN) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/tests/obj/%.o: tests/%.c | deps $(BPF_SKELS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) $(REF_CUDA_FLAGS) $(PKG_CFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) -O2 -Iinclude -c $< -o $@

# ---- CUPTI injection library -----------------------------------------------

$(BUILD)/%.pic.o: %.c | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) $(CUPTI_CFLAGS) -c $< -o $@

$(CUPTI_LIB): $(CUPTI_OBJS)
	$(CC) -shared $(SAN) -o $@ $^ $(CUPTI_LIBS) -lpthread

# ---- tests -----------------------------------------------------------------

TEST_LIBS = $(shell pkg-config --libs criterion)

$(BUILD)/tests/unit: $(UNIT_OBJS) $(USER_LIB) $(REF_LIB) $(LG_LIB)
	$(CC) $(SAN) -o $@ $^ $(TEST_LIBS) $(PKG_LIBS) $(REF_CUDA_LIBS) $(LDLIBS)

# A program shaped like llama-server (its llama_decode in a libllama.so the
# dynamic loader maps), for the step probe's end-to-end test.
LLAMA_BINS := $(BUILD)/tests/llama/libllama.so $(BUILD)/tests/llama/llama-engine \
	      $(BUILD)/tests/llama/llama-engine-dl
$(BUILD)/tests/llama/libllama.so: tests/e2e/llama/libllama.c tests/e2e/llama/batch.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -shared -fPIC -o $@ $<
$(BUILD)/tests/llama/llama-engine: tests/e2e/llama/engine.c tests/e2e/llama/batch.h $(BUILD)/tests/llama/libllama.so
	$(CC) $(CFLAGS) -DENGINE_LINKED -o $@ $< -L$(BUILD)/tests/llama -lllama \
	  -Wl,-rpath,'$$ORIGIN' -ldl
$(BUILD)/tests/llama/llama-engine-dl: tests/e2e/llama/engine.c tests/e2e/llama/batch.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< -ldl
# For llama.cpp's own llama-server (make test-llama): a tiny model, and the
# truth of its llama_decode calls.
LLAMA_TRUTH := $(BUILD)/tests/llama/tinygguf $(BUILD)/tests/llama/libdecodelog.so
$(BUILD)/tests/llama/tinygguf: tests/e2e/llama/tinygguf.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $<
$(BUILD)/tests/llama/libdecodelog.so: tests/e2e/llama/decodelog.c tests/e2e/llama/batch.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -shared -fPIC -o $@ $< -ldl
$(BUILD)/tests/e2e: $(E2E_OBJS) $(USER_LIB) $(REF_LIB) $(LG_LIB) | $(LLAMA_BINS)
	$(CC) $(SAN) -o $@ $^ $(TEST_LIBS) $(PKG_LIBS) $(REF_CUDA_LIBS) $(LDLIBS)

$(BUILD)/tests/cupti: $(CTEST_SRCS) $(filter-out $(BUILD)/cupti/inject.pic.o,$(CUPTI_OBJS)) | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) $(CUPTI_CFLAGS) -o $@ $(filter %.c %.o,$^) $(TEST_LIBS) $(CUPTI_LIBS) $(LDLIBS)

test: deps-test all test-unit test-asan fuzz-smoke test-cupti test-e2e

test-unit: $(BUILD)/tests/unit
	$(BUILD)/tests/unit --jobs 2

ifeq ($(HAVE_CUPTI),1)
test-cupti: $(BUILD)/tests/cupti $(CUPTI_LIB)
	$(BUILD)/tests/cupti --jobs 1
else
test-cupti:
	@echo "tokentrace: no CUDA toolkit: CUPTI library tests skipped"
endif

# End-to-end tests start real servers on loopback ports, one at a time.
# The first pass takes the hooks `auto` picks: libc uprobes for the
# servers, the syscall tracepoints where the CPU compute source measures
# the server (--compute cpu). Then the socket tracer's suites again with
# the other kind forced (TOKENTRACE_HOOKS), so that each kind of hook
# meets each of them.
E2E_SYSCALLS_SUITES := @(record|faults|trace|agent|views)/*
E2E_LIBC_SUITES     := @(run|tracefs)/*
test-e2e: all $(BUILD)/tests/e2e
	$(BUILD)/tests/e2e --jobs 1 --filter '!(llama)/*'
	TOKENTRACE_HOOKS=syscalls $(BUILD)/tests/e2e --jobs 1 \
	  --filter '$(E2E_SYSCALLS_SUITES)'
	TOKENTRACE_HOOKS=libc $(BUILD)/tests/e2e --jobs 1 \
	  --filter '$(E2E_LIBC_SUITES)'

# llama.cpp's own llama-server under tokentrace: tools/llama.sh builds it
# from the llama.cpp source the npm package node-llama-cpp carries (some
# 5 minutes on 2 cores, once, and the package from the npm registry), so
# it is not part of `make test`.
test-llama: all $(BUILD)/tests/e2e $(LLAMA_TRUTH)
	tools/llama.sh $(BUILD)/llama
	$(BUILD)/tests/e2e --jobs 1 --filter 'llama/*'

# ---- the main job and benchmarks -------------------------------------------

demo: all
	tools/demo.sh

# Small helper programs of the benchmarks (tools/bench/*.c), on libtt.a.
BENCH_BINS := $(patsubst tools/bench/%.c,$(BUILD)/bench/%,$(wildcard tools/bench/*.c))
$(BUILD)/bench/%: tools/bench/%.c $(USER_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -o $@ $< $(USER_LIB) $(PKG_LIBS) $(LDLIBS)

bench: all $(BENCH_BINS)
	tools/bench.sh

# A 30-minute soak of record under churn (SOAK_SECONDS to change; root).
soak: all
	tools/soak.sh

# The two commands on a new Debian 12 root (FRESH_STEPS, FRESH_KEEP).
.PHONY: fresh
fresh:
	tools/fresh.sh

clean:
	rm -rf $(BUILD)

# ---- installing ------------------------------------------------------------
#
#   make install     PREFIX (default /usr/local) and DESTDIR honoured:
#                    $(PREFIX)/bin/tokentrace,
#                    $(PREFIX)/lib/tokentrace/libtokentrace_cupti.so (when
#                    built; `tokentrace run` finds it there),
#                    the systemd unit in $(UNITDIR) (not enabled), and
#                    /etc/default/tokentrace unless one exists
#   make uninstall   removes them, but not /etc/default/tokentrace nor the
#                    traces and hash key in /var/lib/tokentrace

PREFIX      ?= /usr/local
BINDIR      := $(PREFIX)/bin
TT_LIBDIR   := $(PREFIX)/lib/tokentrace
UNITDIR     ?= $(PREFIX)/lib/systemd/system
DEFAULTSDIR ?= /etc/default

.PHONY: install uninstall
install: $(BUILD)/tokentrace $(if $(filter 1,$(HAVE_CUPTI)),$(CUPTI_LIB))
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DEFAULTSDIR)
	install -m 0755 $(BUILD)/tokentrace $(DESTDIR)$(BINDIR)/tokentrace
	if [ -f $(CUPTI_LIB) ]; then install -d $(DESTDIR)$(TT_LIBDIR) && \
	  install -m 0755 $(CUPTI_LIB) $(DESTDIR)$(TT_LIBDIR)/; fi
	sed 's|/usr/local/bin/|$(BINDIR)/|g' tools/tokentrace.service \
	  > $(DESTDIR)$(UNITDIR)/tokentrace.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/tokentrace.service
	test -e $(DESTDIR)$(DEFAULTSDIR)/tokentrace || install -m 0644 \
	  tools/tokentrace.default $(DESTDIR)$(DEFAULTSDIR)/tokentrace
	@echo "tokentrace: installed; start the host agent with:" \
	  "systemctl daemon-reload && systemctl enable --now tokentrace"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/tokentrace \
	  $(DESTDIR)$(TT_LIBDIR)/libtokentrace_cupti.so \
	  $(DESTDIR)$(UNITDIR)/tokentrace.service
	-rmdir $(DESTDIR)$(TT_LIBDIR) 2>/dev/null

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- fuzzing and sanitizers ----
#
#   make fuzz        each libFuzzer target for FUZZ_SECONDS (default 60) s
#   make fuzz-smoke  each target for FUZZ_SMOKE_RUNS (default 100000) inputs
#                    from a fixed seed and the checked-in seeds alone, so it
#                    tries the same inputs on every run; in make test
#   make test-asan   the unit tests built with ASan and UBSan in build/asan/
#
# The fuzz targets (tests/fuzz/fuzz_*.c) compile the modules they test from
# source with clang (libFuzzer needs it), not from libtt.a. New inputs go to
# build/fuzz/corpus/<target>, crashes to build/fuzz/crashes/ (tools/fuzz.sh).

FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_RUNS    ?= 100000
FUZZ_CFLAGS := -g -O1 -std=gnu11 -Wall -Wextra -Wshadow \
	-Wno-missing-field-initializers -D_GNU_SOURCE -Iinclude \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
FUZZ_NAMES := http sse api requests cuptirecv refserver_http
FUZZ_BINS  := $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%)
# One binary from several sources: -MMD cannot list headers, so all count.
FUZZ_HDRS  := tests/fuzz/fuzz.h $(wildcard user/*.h tools/refserver/*.h \
	include/tokentrace/*.h)

# $(1) target, $(2) sources it tests, $(3) libraries
define FUZZ_RULE
$(BUILD)/fuzz/fuzz_$(1): tests/fuzz/fuzz_$(1).c $(2) $(FUZZ_HDRS) | deps-test
	@mkdir -p $$(@D)
	$(CLANG) $(FUZZ_CFLAGS) -o $$@ $$(filter %.c,$$^) $(3)
endef
$(eval $(call FUZZ_RULE,http,user/http.c,))
$(eval $(call FUZZ_RULE,sse,user/sse.c,))
$(eval $(call FUZZ_RULE,api,user/api.c,-lcjson))
$(eval $(call FUZZ_RULE,requests,user/requests.c user/http.c user/sse.c \
	user/api.c user/tenant.c,-lcjson -lcrypto -lm))
$(eval $(call FUZZ_RULE,cuptirecv,user/cuptirecv.c,))
$(eval $(call FUZZ_RULE,refserver_http,tools/refserver/http.c,))

.PHONY: fuzz fuzz-smoke fuzz-build test-asan
fuzz-build: $(FUZZ_BINS)
fuzz: fuzz-build
	tools/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_NAMES)
fuzz-smoke: fuzz-build
	FUZZ_RUNS=$(FUZZ_SMOKE_RUNS) tools/fuzz.sh 0 $(FUZZ_NAMES)

# The unit test binary again (build/asan/unit), every object rebuilt with
# the sanitizers.
ASAN_DIR   := $(BUILD)/asan
# float-cast-overflow: gcc leaves it out of `undefined` (clang does not).
ASAN_FLAGS := -fsanitize=address,undefined,float-cast-overflow \
	-fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined,float-cast-overflow
ASAN_LIB_SRCS := $(filter-out user/main.c tools/refserver/main.c \
	tools/loadgen/main.c,$(USER_SRCS) $(REF_SRCS) $(LG_SRCS))
ASAN_OBJS := $(ASAN_LIB_SRCS:%.c=$(ASAN_DIR)/obj/%.o) \
	$(UNIT_SRCS:%.c=$(ASAN_DIR)/obj/%.o)

$(ASAN_DIR)/obj/%.o: %.c | deps $(BPF_SKELS)
	@mkdir -p $(@D)
	$(CC) $(filter-out -O2,$(CFLAGS)) -O1 $(ASAN_FLAGS) $(REF_CUDA_FLAGS) \
	  $(PKG_CFLAGS) -c $< -o $@
$(ASAN_DIR)/unit: $(ASAN_OBJS) $(REF_CU_OBJS)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(TEST_LIBS) $(PKG_LIBS) $(REF_CUDA_LIBS) \
	  $(LDLIBS)

test-asan: $(ASAN_DIR)/unit
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(ASAN_DIR)/unit --jobs 2
