# Makefile — builds build/moe and the library, runs the tests and the demo.
#   make            build build/moe
#   make test       install what the tests need, build, run every test: once
#                   as built, once under AddressSanitizer + UBSan, then a short
#                   libFuzzer run of every parser
#   make test-fast  the plain suite only
#   make fuzz       longer fuzzing runs (FUZZ_SECONDS each, default 300)
#   make demo       install what the demo needs, build, run the main job
#   make bench      run the benchmarks (never part of the tests)

CC      ?= cc
# -DNDEBUG: the assert()s on internal invariants (kernel shapes, layout ranges,
# index bounds) are compiled out here and kept in the sanitizer build
# (ASAN_OPT, test-asan-build) and the fuzzers, which `make test` runs
OPT     ?= -O3 -march=native -DNDEBUG
CFLAGS  += $(OPT) -g -std=c11 -Wall -Wextra -D_DEFAULT_SOURCE -fopenmp -Iinclude -Isrc
LDLIBS  += -ldnnl -lopenblas -lpcre2-8 -lz -lm
BUILD   ?= build
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)   # make test builds its three trees with this many jobs

# MPI (Open MPI or MPICH): only src/comm/comm_mpi.c names it, and only the
# moe program links it; the library, unit tests and fuzzers never do
MPI_CFLAGS ?= $(shell pkg-config --cflags ompi-c 2>/dev/null || pkg-config --cflags mpich 2>/dev/null || mpicc --showme:compile 2>/dev/null)
MPI_LIBS   ?= $(shell pkg-config --libs ompi-c 2>/dev/null || pkg-config --libs mpich 2>/dev/null || mpicc --showme:link 2>/dev/null)
# libmicrohttpd: only `moe serve` (src/cli/serve.c) uses it, so only the moe
# program links it; without it moe builds, and `moe serve` says what to install
HTTP_LIBS  ?= $(shell pkg-config --libs libmicrohttpd 2>/dev/null && echo -lpthread)

LIB_SRC  := $(shell find src -name '*.c' ! -path 'src/cli/*' ! -name main.c ! -name '*_mpi.c' | sort)
CLI_SRC  := src/main.c $(sort $(wildcard src/cli/*.c)) src/comm/comm_mpi.c
TEST_SRC := $(sort $(wildcard tests/unit/test_*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
REF_SRC  := $(sort $(wildcard tests/ref/*.c))
REF_BIN  := $(REF_SRC:tests/ref/%.c=$(BUILD)/tests/ref_%)

ASAN_OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CFLAGS := -g -O1 -std=c11 -D_DEFAULT_SOURCE -Iinclude -Isrc -Itests/fuzz -fopenmp=libgomp \
               -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/fuzz/obj/%.o)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 300

.PHONY: all deps npm-deps test test-fast test-asan-build fuzz-build fuzz demo bench clean
all: $(BUILD)/moe $(TEST_BIN) $(REF_BIN)

$(BUILD)/obj/%.o: %.c $(wildcard include/moe/*/*.h) $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# AdamW's loop (src/train/optim.c) vectorises only where sqrtf is one
# instruction, not a call that may set errno (nothing here reads errno)
$(BUILD)/obj/src/train/optim.o: CFLAGS += -fno-math-errno

ifeq ($(strip $(HTTP_LIBS)),)
$(BUILD)/obj/src/cli/serve.o: CFLAGS += -DMOE_NO_HTTP
endif

$(BUILD)/obj/src/comm/comm_mpi.o: src/comm/comm_mpi.c $(wildcard include/moe/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MPI_CFLAGS) -c $< -o $@

$(BUILD)/libmoe.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/moe: $(CLI_OBJ) $(BUILD)/libmoe.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) $(MPI_LIBS) $(HTTP_LIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/harness.h $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< $(BUILD)/libmoe.a -o $@ $(LDLIBS)

$(BUILD)/tests/ref_%: tests/ref/%.c $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/libmoe.a -o $@ $(LDLIBS)

deps:
	@scripts/install-deps.sh

# the npm packages the reference tests use (.cache/npm): make test fetches
# them while it compiles, instead of in its first test that needs them
npm-deps:
	@tools/npm_deps.sh

test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all test-asan-build fuzz-build npm-deps
	@tests/run.sh $(BUILD) $(BUILD)-asan $(BUILD)/fuzz

test-fast: deps
	@$(MAKE) --no-print-directory all
	@tests/run.sh $(BUILD)

test-asan-build:
	@$(MAKE) --no-print-directory BUILD=$(BUILD)-asan OPT="$(ASAN_OPT)" all

# libFuzzer harnesses (clang): the library rebuilt with the fuzzer's coverage
$(BUILD)/fuzz/obj/%.o: %.c $(wildcard include/moe/*/*.h) $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz_file.h $(FUZZ_LIB_OBJ)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_LIB_OBJ) -o $@ $(LDLIBS) -lgomp

fuzz-build: $(FUZZ_BIN)

fuzz: deps fuzz-build
	@tests/fuzz/run.sh $(BUILD)/fuzz $(FUZZ_SECONDS)

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh $(BUILD)

BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
$(BUILD)/bench/%: bench/%.c $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/libmoe.a -o $@ $(LDLIBS)

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	@mkdir -p bench/results
	$(BUILD)/bench/ffn_speed bench/results/ffn_speed.json
	bench/moe_step_speed.sh $(BUILD)
	bench/train_speed.sh $(BUILD)
	bench/decode_speed.sh $(BUILD)
	bench/scaling.sh $(BUILD)

clean:
	rm -rf $(BUILD)
