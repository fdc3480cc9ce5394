# Matchmaker — one plain, non-recursive Makefile.
#
#   make                     build every binary into build/bin/
#   make SANITIZE=address,undefined   the same, instrumented
#   make up / make down      the whole suite on this machine (deploy/local/)
#   make test                unit + integration tests (starts its own stores)
#   make bench               load suites in tests/load/
#   make fmt / fmt-check / lint
#   make install PREFIX=/usr/local

.DEFAULT_GOAL := all

CC ?= cc
PREFIX ?= /usr/local
BUILD ?= build
PYTHON ?= /usr/bin/python3

PKGS := libh2o-evloop libpq jansson openssl libcurl hiredis

# Installing what is missing comes first, so pkg-config below may fail on a
# fresh machine until `deploy/local/deps.sh` ran: keep its stderr quiet.
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARNINGS := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes \
            -Wmissing-prototypes -Wvla -Wno-unused-parameter
CPPFLAGS += -Icommon/include -D_GNU_SOURCE -DH2O_USE_LIBUV=0 $(PKG_CFLAGS)
CFLAGS ?= -O2 -g
CFLAGS += -std=c17 -pthread -fno-strict-aliasing $(WARNINGS) -MMD -MP
LDFLAGS += -pthread
LDLIBS += $(PKG_LIBS) -lm

ifeq ($(CI),true)
CFLAGS += -Werror
endif
ifneq ($(SANITIZE),)
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# Rebuild everything when the flags change (e.g. toggling SANITIZE).
FLAGS_STAMP := $(BUILD)/.flags
FLAGS_NOW := $(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS)
$(shell mkdir -p $(BUILD); [ "$$(cat $(FLAGS_STAMP) 2>/dev/null)" = '$(FLAGS_NOW)' ] || echo '$(FLAGS_NOW)' > $(FLAGS_STAMP))

# --- libmm ---------------------------------------------------------------
LIBMM := $(BUILD)/lib/libmm.a
LIBMM_SRC := $(wildcard common/src/*.c)
LIBMM_OBJ := $(LIBMM_SRC:%.c=$(BUILD)/obj/%.o)

# --- services: services/<dir>/*.c -> build/bin/<binary> -------------------
SERVICE_DIRS := $(notdir $(wildcard services/*))
bin_name = $(if $(filter agent,$(1)),mm,mm-$(1))
BINS := $(foreach d,$(SERVICE_DIRS),$(BUILD)/bin/$(call bin_name,$(d)))

define service_rule
$(BUILD)/bin/$(call bin_name,$(1)): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard services/$(1)/*.c)) $(LIBMM)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) -o $$@ $$(filter %.o,$$^) $(LIBMM) $$(LDLIBS)
endef
$(foreach d,$(SERVICE_DIRS),$(eval $(call service_rule,$(d))))

# --- unit tests: tests/unit/test_<name>.c -> build/tests/test_<name> -------
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# --- tools built from tests/ (load generators) ----------------------------
LOAD_SRC := $(wildcard tests/load/*.c)
LOAD_BINS := $(LOAD_SRC:tests/load/%.c=$(BUILD)/tests/%)

.PHONY: all deps up down test test-unit test-integration test-nat test-e2e bench fuzz fmt fmt-check lint install clean

all: $(BINS)

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIBMM): $(LIBMM_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIBMM)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBMM) $(LDLIBS) -lcmocka

$(LOAD_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/load/%.o $(LIBMM)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBMM) $(LDLIBS)

deps:
	@deploy/local/deps.sh

up: deps
	@$(MAKE) --no-print-directory all
	@deploy/local/up.sh

down:
	@deploy/local/down.sh

test: deps
	@$(MAKE) --no-print-directory all $(UNIT_BINS) $(LOAD_BINS)
	@$(MAKE) --no-print-directory test-unit test-integration
	@$(MAKE) --no-print-directory test-nat

test-unit: $(UNIT_BINS)
	@deploy/local/run-unit.sh $(UNIT_BINS)

test-integration: all
	MM_BUILD_DIR=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/integration $(PYTEST_ARGS)

# the network-namespace NAT lab (tests/e2e; root, else skipped with the reason)
test-nat test-e2e: all
	MM_BUILD_DIR=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/e2e $(PYTEST_ARGS)

bench: all $(LOAD_BINS)
	@tests/load/run-all.sh

# libFuzzer harnesses: tests/fuzz/fuzz_<name>.c against the libmm sources
# they name in their header (FUZZ_SRC_<name>), seeds in tests/fuzz/seeds_<name>.
FUZZ_TIME ?= 60
FUZZ_SRC_stun := common/src/stun.c
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
define fuzz_rule
$(BUILD)/fuzz/fuzz_$(1): tests/fuzz/fuzz_$(1).c $(FUZZ_SRC_$(1))
	@mkdir -p $$(dir $$@)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=c17 -D_GNU_SOURCE \
	  -Icommon/include -o $$@ $$^ -lcrypto
endef
$(foreach n,$(FUZZ_NAMES),$(eval $(call fuzz_rule,$(n))))

fuzz: $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%)
	@for n in $(FUZZ_NAMES); do \
	  mkdir -p $(BUILD)/fuzz/corpus_$$n; \
	  $(BUILD)/fuzz/fuzz_$$n -max_total_time=$(FUZZ_TIME) -max_len=2048 $(BUILD)/fuzz/corpus_$$n tests/fuzz/seeds_$$n || exit 1; \
	done

FMT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
fmt:
	clang-format -i $(FMT_FILES)

fmt-check:
	clang-format --dry-run --Werror $(FMT_FILES)

lint:
	@deploy/local/lint.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	if [ -f docs/mm.1 ]; then install -m 0644 docs/mm.1 $(DESTDIR)$(PREFIX)/share/man/man1/; fi

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
