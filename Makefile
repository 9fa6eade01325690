# Makefile — builds build/moe and the library, runs the tests and the demo.
#   make          build build/moe
#   make test     install what the tests need, build, run every test
#   make demo     install what the demo needs, build, run the main job
#   make bench    run the benchmarks (never part of the tests)

CC      ?= cc
OPT     ?= -O2 -march=native
CFLAGS  += $(OPT) -g -std=c11 -Wall -Wextra -D_DEFAULT_SOURCE -fopenmp -Iinclude -Isrc
LDLIBS  += -lopenblas -lpcre2-8 -lm
BUILD   ?= build

LIB_SRC  := $(shell find src -name '*.c' ! -path 'src/cli/*' ! -name main.c | sort)
CLI_SRC  := src/main.c $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/unit/test_*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
REF_SRC  := $(sort $(wildcard tests/ref/*.c))
REF_BIN  := $(REF_SRC:tests/ref/%.c=$(BUILD)/tests/ref_%)

.PHONY: all deps test demo bench clean
all: $(BUILD)/moe $(TEST_BIN) $(REF_BIN)

$(BUILD)/obj/%.o: %.c $(wildcard include/moe/*.h) $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libmoe.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/moe: $(CLI_OBJ) $(BUILD)/libmoe.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/harness.h $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< $(BUILD)/libmoe.a -o $@ $(LDLIBS)

$(BUILD)/tests/ref_%: tests/ref/%.c $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/libmoe.a -o $@ $(LDLIBS)

deps:
	@scripts/install-deps.sh

test: deps
	@$(MAKE) --no-print-directory all
	@tests/run.sh $(BUILD)

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory all
	@bench/train_speed.sh $(BUILD)

clean:
	rm -rf $(BUILD)
