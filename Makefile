# ngx_mdm_watch_module
#
#   make          build build/ngx_mdm_watch_module.so
#   make deps     install the Debian packages it needs
#   make demo     run the whole pairing flow on loopback
#   make test     run the test suite
#
# NGINX_SRC=/path/to/nginx-src builds against another nginx source tree.

BUILD ?=	build
MODULE =	$(BUILD)/ngx_mdm_watch_module.so
SOURCES =	config $(wildcard ngx_mdm_watch_module/*.c) \
		$(wildcard ngx_mdm_watch_module/*.h)

PACKAGES =	gcc make perl openssl nginx nginx-dev libplist-dev \
		libplist-utils libhiredis-dev libssl-dev redis-server

export NGINX_SRC BUILD

.PHONY: all deps demo test clean

all: $(MODULE)

$(MODULE): $(SOURCES) tools/build-module
	@tools/build-module

deps:
	@tools/deps $(PACKAGES)

demo: deps $(MODULE)
	@demo/run

test: deps $(MODULE)
	prove -r t/

clean:
	rm -rf $(BUILD)
