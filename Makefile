# FvdFuse: make deps | build | test | run | install PREFIX=dir | deb | reliability | bench
SHELL := /bin/bash
DOTNET ?= dotnet
CONFIG ?= Release
LONG ?= 0
FILTER ?=
QUICK ?= 0
PREFIX ?= /usr/local
OUT := $(CURDIR)/out
DEMO := $(CURDIR)/demo
APT_PACKAGES := fuse3 e2fsprogs util-linux qemu-utils fio postmark strace nginx-light iproute2 curl procps file gcc zlib1g-dev \
  lintian bash-completion binutils man-db dpkg-dev \
  attr fdisk dosfstools mtools qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu
# NativeAOT needs the target's runtime identifier.
VERSION ?= 0.1.$(shell git rev-list --count HEAD 2>/dev/null || echo 0)
RID ?= linux-$(subst x86_64,x64,$(subst aarch64,arm64,$(shell uname -m)))

.PHONY: deps build test run install reliability bench clean publish deb

# Installs what the build and the tests need (idempotent; as root, as in CI). A temporary policy-rc.d
# keeps package scripts from starting services (nginx): the tests start their own on loopback.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: need root to install:$$missing" >&2; exit 1; fi; \
	  echo "installing:$$missing"; \
	  policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; rc=$$?; \
	  [ -z "$$policy" ] || rm -f /usr/sbin/policy-rc.d; \
	  [ $$rc = 0 ] || exit $$rc; \
	fi
	@[ -e /dev/fuse ] || { modprobe fuse 2>/dev/null || true; }
	@# The qemu user and group of libvirt's built-in qemu.conf defaults, as libvirt-daemon-system creates them.
	@if [ "$$(id -u)" = 0 ]; then getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu; \
	  getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu; fi

build:
	$(DOTNET) build FvdFuse.sln -c $(CONFIG) -nologo -v quiet -clp:ErrorsOnly

# The two tools compiled ahead of time (NativeAOT: no .NET runtime needed) into out/lib/fvdfuse, linked
# from out/bin. libMono.Unix.so sits beside them (found next to the executable, also through the links).
publish:
	$(DOTNET) publish src/Fvd.Img/Fvd.Img.csproj -c $(CONFIG) -r $(RID) -o $(OUT)/obj/fvd-img -nologo -v quiet
	$(DOTNET) publish src/Fvd.Mount/Fvd.Mount.csproj -c $(CONFIG) -r $(RID) -o $(OUT)/obj/fvdmount -nologo -v quiet
	rm -rf $(OUT)/lib/fvdfuse && mkdir -p $(OUT)/lib/fvdfuse $(OUT)/bin
	install -m 755 $(OUT)/obj/fvd-img/fvd-img $(OUT)/obj/fvdmount/fvdmount $(OUT)/lib/fvdfuse/
	install -m 644 $(OUT)/obj/fvd-img/libMono.Unix.so $(OUT)/lib/fvdfuse/
	ln -sf ../lib/fvdfuse/fvd-img $(OUT)/bin/fvd-img
	ln -sf ../lib/fvdfuse/fvdmount $(OUT)/bin/fvdmount

test: deps build
	FILTER='$(FILTER)' bash tests/run-tests.sh $(CONFIG)

run: deps publish
	bash packaging/demo.sh $(OUT)/bin $(DEMO)

install: publish
	mkdir -p $(PREFIX)/bin $(PREFIX)/lib/fvdfuse $(PREFIX)/share/man/man1 $(PREFIX)/share/man/man5
	rm -rf $(PREFIX)/lib/fvdfuse/fvd-img $(PREFIX)/lib/fvdfuse/fvdmount # directories of the earlier JIT layout
	cp -a $(OUT)/lib/fvdfuse/. $(PREFIX)/lib/fvdfuse/
	ln -sf ../lib/fvdfuse/fvd-img $(PREFIX)/bin/fvd-img
	ln -sf ../lib/fvdfuse/fvdmount $(PREFIX)/bin/fvdmount
	for m in man/*.1; do [ -e "$$m" ] && install -m 644 $$m $(PREFIX)/share/man/man1/; done; true
	for m in man/*.5; do [ -e "$$m" ] && install -m 644 $$m $(PREFIX)/share/man/man5/; done; true
	# mount(8) looks for helpers in /sbin: with a PREFIX other than /usr, link $(PREFIX)/sbin/mount.fuse.fvd there.
	mkdir -p $(PREFIX)/sbin && install -m 755 packaging/mount.fuse.fvd $(PREFIX)/sbin/

# A Debian package of the native tools: out/fvdfuse_VERSION_ARCH.deb (install with apt-get install ./FILE).
deb: deps publish
	bash packaging/build-deb.sh $(OUT)/lib/fvdfuse $(VERSION) $(OUT)

# The four reliability harnesses (issue 5): short run; LONG=1 for the long one.
reliability: deps build
	LONG=$(LONG) bash tests/reliability.sh

# Benchmarks against the peers (qemu-storage-daemon, qemu-nbd + nbdfuse, xmount) and the host file; not run in
# CI. bench/peers.sh installs the peers: QEMU from this release's backports (the apt source is derived from the
# machine's own), xmount and libnbd-bin as packaged. QUICK=1: a short run.
bench: deps build
	bash bench/peers.sh
	bash bench/run.sh $(if $(filter 1,$(QUICK)),--quick,)

clean:
	$(DOTNET) clean FvdFuse.sln -nologo -v quiet; rm -rf $(OUT) $(DEMO)
