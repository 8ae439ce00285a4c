# ngx_mdm_watch_module
#
#   make          build build/ngx_mdm_watch_module.so
#   make deps     install the Debian packages it needs
#   make demo     run the whole pairing flow on loopback
#   make bench    measure the module against references: docs/benchmarks.md
#   make screenshots  write docs/pairs.png and docs/pairs-desktop.png
#   make test     run the test suite, under the sanitizers too, and
#                 each fuzz target briefly (make check: the suite alone)
#
# NGINX_SRC=/path/to/nginx-src builds against another nginx source tree.

BUILD ?=	build
MODULE =	$(BUILD)/ngx_mdm_watch_module.so
SOURCES =	config $(wildcard ngx_mdm_watch_module/*.c) \
		$(wildcard ngx_mdm_watch_module/*.h)

PACKAGES =	gcc make perl openssl nginx nginx-dev libplist-dev \
		libplist-utils libhiredis-dev libssl-dev redis-server \
		$(BROWSER_PACKAGES)

# the browser test of the pairs page, and its screenshots
BROWSER_PACKAGES =	chromium

export NGINX_SRC BUILD

.PHONY: all deps demo test check screenshots clean

all: $(MODULE)

$(MODULE): $(SOURCES) tools/build-module
	@tools/build-module

deps:
	@tools/deps $(PACKAGES)

demo: deps $(MODULE)
	@demo/run

# the suite, the same suite under AddressSanitizer and UBSan, and each
# fuzz target for a short while
test: check test-asan fuzz-smoke

check: deps $(MODULE)
	prove -r t/

screenshots: deps $(MODULE)
	@tools/pairs-screenshots

clean:
	rm -rf $(BUILD)


# libFuzzer targets for the parsers of untrusted bytes: see fuzz/README.md

FUZZ_PACKAGES =	clang-14 libclang-rt-14-dev pkg-config

.PHONY: fuzz fuzz-smoke

fuzz: deps
	@tools/deps $(FUZZ_PACKAGES)
	@fuzz/run

fuzz-smoke: deps
	@tools/deps $(FUZZ_PACKAGES)
	@FUZZ_TIME=20 fuzz/run


# the test suite under AddressSanitizer and UndefinedBehaviorSanitizer,
# and under Valgrind's memcheck: see docs/testing.md.  The sanitized
# module has a build of its own; fortified string functions would go
# round ASan's checks, hence -U_FORTIFY_SOURCE; tools/asan-pool.h gives
# each pool allocation of the module redzones of its own.

ASAN_BUILD =	$(BUILD)/asan
ASAN_CC_OPT =	-fsanitize=address,undefined -fno-sanitize-recover=undefined \
		-fno-omit-frame-pointer -O1 -g -U_FORTIFY_SOURCE \
		-include $(CURDIR)/tools/asan-pool.h
ASAN_LD_OPT =	-fsanitize=address,undefined

.PHONY: test-asan test-valgrind

test-asan: deps
	@BUILD=$(ASAN_BUILD) NGX_CC_OPT='$(ASAN_CC_OPT)' \
		NGX_LD_OPT='$(ASAN_LD_OPT)' tools/build-module
	@ASAN_BUILD=$(ASAN_BUILD) tools/test-asan

test-valgrind: deps $(MODULE)
	@tools/deps valgrind
	@TEST_NGINX_MODULE=$(MODULE) tools/test-valgrind


# the module's cost, as ratios against references measured alternately
# in the same run; writes docs/benchmarks.md (BENCH_ARGS: see the head of
# bench/bench.pl)

BENCH_PACKAGES =	wrk pkgconf redis-tools linux-perf

.PHONY: bench

bench: deps $(MODULE)
	@tools/deps $(BENCH_PACKAGES)
	@timeout 1200 perl bench/bench.pl $(BENCH_ARGS)
