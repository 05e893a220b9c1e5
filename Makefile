# remote-directory: the Rust library and remote-directoryd (built by cargo) and the C programs
# of c-examples/.
#
#   make                      cargo build --release (library and daemon), then the C programs into c-examples/build/,
#                             and the manual pages into man/build/ (scdoc)
#   make install              PREFIX=/usr/local DESTDIR= (PAMDIR=$(LIBDIR)/security,
#                             SYSTEMDUNITDIR=$(LIBDIR)/systemd/system, SYSUSERSDIR=$(LIBDIR)/sysusers.d)
#   make uninstall            same variables as install
#   make test-c               c-examples/tests/run.sh (needs RD_SERVERS_ENV, see tests/servers/README.md)
#   make man                  only the manual pages
#   make clean                remove c-examples/build/ and man/build/ (`make distclean` also runs cargo clean)
#
# The programs in c-examples/build/ use the shared library from target/release (through an
# rpath) and run in place; policy-remote-directory uses none (it relays to remote-directoryd). `make install` relinks them for $(LIBDIR). The PAM module always
# contains the static library, with its symbols hidden.

PREFIX      ?= /usr/local
EXEC_PREFIX ?= $(PREFIX)
BINDIR      ?= $(EXEC_PREFIX)/bin
SBINDIR     ?= $(EXEC_PREFIX)/sbin
LIBDIR      ?= $(EXEC_PREFIX)/lib
INCLUDEDIR  ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
PAMDIR      ?= $(LIBDIR)/security
DESTDIR     ?=

CARGO   ?= cargo
INSTALL ?= install
CFLAGS  ?= -O2 -g
LDFLAGS ?=
# Required, not a matter of taste: the examples are C99 and must build without warnings.
WARN = -Wall -Wextra -Werror -std=c99 -pedantic

# What the static library needs from the system, as printed by
# `cargo rustc --release --lib --crate-type staticlib -- --print native-static-libs`
# for this crate on Linux/glibc. Used to link the PAM module and written to the .pc file.
LIBS_PRIVATE ?= -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

VERSION := $(shell sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))
LIBNAME  = libremote_directory
SONAME   = $(LIBNAME).so.$(SOMAJOR)

RELEASE = target/release
HEADER  = include/remote_directory.h
SO      = $(RELEASE)/$(LIBNAME).so
A       = $(RELEASE)/$(LIBNAME).a
SRC     = c-examples
BUILD   = c-examples/build

TOOLS    = example directory-check checkpassword-remote-directory policy-remote-directory
PAM      = pam_remote_directory.so
PROGRAMS = $(addprefix $(BUILD)/,$(TOOLS) $(PAM))

# In-tree programs find the library through $(BUILD)/lib/$(SONAME), a link to the one in
# target/release (cargo does not create the SONAME link); installed ones in $(LIBDIR),
# unless that is a directory the dynamic linker searches anyway.
BUILD_RPATH   = -Wl,-rpath,$(CURDIR)/$(BUILD)/lib
SYSTEM_LIBDIRS = /lib /usr/lib /lib64 /usr/lib64 /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu
INSTALL_RPATH = $(if $(filter $(SYSTEM_LIBDIRS),$(LIBDIR)),,-Wl,-rpath,$(LIBDIR))

# Relative to ${prefix} in the .pc file when possible, so `pkg-config --define-prefix`
# can relocate a DESTDIR copy.
PC_LIBDIR     = $(if $(filter $(EXEC_PREFIX)/lib,$(LIBDIR)),$${exec_prefix}/lib,$(LIBDIR))
PC_INCLUDEDIR = $(if $(filter $(PREFIX)/include,$(INCLUDEDIR)),$${prefix}/include,$(INCLUDEDIR))

.PHONY: all lib programs c-programs man install install-man uninstall uninstall-man test-c clean distclean

all: programs man

# cargo decides what is stale; the C programs are relinked whenever it ran.
lib:
	$(CARGO) build --release

programs: lib
	@$(MAKE) --no-print-directory c-programs

c-programs: $(PROGRAMS) $(BUILD)/remote_directory.pc

$(BUILD):
	mkdir -p $@

$(BUILD)/lib/$(SONAME): | $(BUILD)
	mkdir -p $(BUILD)/lib
	ln -sf $(CURDIR)/$(SO) $@

$(BUILD)/example $(BUILD)/directory-check $(BUILD)/checkpassword-remote-directory: \
		$(BUILD)/%: $(SRC)/%.c $(HEADER) $(SO) | $(BUILD)/lib/$(SONAME)
	$(CC) $(WARN) $(CFLAGS) -Iinclude -o $@ $< $(LDFLAGS) -L$(RELEASE) $(BUILD_RPATH) -lremote_directory

# The policy program relays to remote-directoryd's policy service: it does not use the
# library, so it needs no rpath and is installed as built.
$(BUILD)/policy-remote-directory: $(SRC)/policy-remote-directory.c | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -o $@ $< $(LDFLAGS)

# The module carries the static library; --exclude-libs hides the archive's symbols and the
# version script exports only pam_sm_*. -z defs: every symbol must be resolved at link time.
$(BUILD)/$(PAM): $(SRC)/pam_remote_directory.c $(SRC)/pam_remote_directory.map $(HEADER) $(A) | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -fPIC -shared -Iinclude -o $@ $< $(LDFLAGS) $(A) \
		-Wl,--exclude-libs,ALL -Wl,--version-script=$(SRC)/pam_remote_directory.map \
		-Wl,--gc-sections -Wl,-z,defs -Wl,-z,relro,-z,now -lpam $(LIBS_PRIVATE)
	@exported=$$(nm -D --defined-only $@ | awk '{print $$3}' | grep -v '^pam_sm_' || true); \
	if [ -n "$$exported" ]; then \
		echo "$@ exports more than pam_sm_*: $$exported" >&2; rm -f $@; exit 1; fi

$(BUILD)/remote_directory.pc: remote_directory.pc.in Cargo.toml Makefile | $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|g' \
	    -e 's|@EXEC_PREFIX@|$(if $(filter $(PREFIX),$(EXEC_PREFIX)),$${prefix},$(EXEC_PREFIX))|g' \
	    -e 's|@LIBDIR@|$(PC_LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(PC_INCLUDEDIR)|g' \
	    -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@LIBS_PRIVATE@|$(LIBS_PRIVATE)|g' $< >$@

# The .pc file depends on PREFIX and friends, so install always regenerates it, and relinks
# the programs with the rpath of their final place.
install: programs install-man install-contrib install-daemon
	rm -f $(BUILD)/remote_directory.pc
	@$(MAKE) --no-print-directory $(BUILD)/remote_directory.pc
	@soname=$$(readelf -d $(SO) | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p'); \
	if [ "$$soname" != "$(SONAME)" ]; then \
		echo "warning: $(SO) has SONAME '$$soname', expected '$(SONAME)'" >&2; fi
	mkdir -p $(BUILD)/install
	for t in directory-check checkpassword-remote-directory; do \
		$(CC) $(WARN) $(CFLAGS) -Iinclude -o $(BUILD)/install/$$t $(SRC)/$$t.c $(LDFLAGS) \
			-L$(RELEASE) $(INSTALL_RPATH) -lremote_directory || exit 1; done
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) \
		$(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(PAMDIR)
	$(INSTALL) -m 755 $(SO) $(DESTDIR)$(LIBDIR)/$(LIBNAME).so.$(VERSION)
	ln -sf $(LIBNAME).so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/$(LIBNAME).so
	$(INSTALL) -m 644 $(A) $(DESTDIR)$(LIBDIR)/$(LIBNAME).a
	$(INSTALL) -m 644 $(HEADER) $(DESTDIR)$(INCLUDEDIR)/remote_directory.h
	$(INSTALL) -m 644 $(BUILD)/remote_directory.pc $(DESTDIR)$(PKGCONFIGDIR)/remote_directory.pc
	$(INSTALL) -m 755 $(BUILD)/install/directory-check $(DESTDIR)$(BINDIR)/directory-check
	$(INSTALL) -m 755 $(BUILD)/install/checkpassword-remote-directory \
		$(DESTDIR)$(BINDIR)/checkpassword-remote-directory
	$(INSTALL) -m 755 $(BUILD)/policy-remote-directory $(DESTDIR)$(SBINDIR)/policy-remote-directory
	$(INSTALL) -m 644 $(BUILD)/$(PAM) $(DESTDIR)$(PAMDIR)/$(PAM)
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then \
		echo ldconfig; ldconfig; fi

uninstall: uninstall-man uninstall-contrib uninstall-daemon
	rm -f $(DESTDIR)$(LIBDIR)/$(LIBNAME).so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
		$(DESTDIR)$(LIBDIR)/$(LIBNAME).so $(DESTDIR)$(LIBDIR)/$(LIBNAME).a \
		$(DESTDIR)$(INCLUDEDIR)/remote_directory.h \
		$(DESTDIR)$(PKGCONFIGDIR)/remote_directory.pc \
		$(DESTDIR)$(BINDIR)/directory-check $(DESTDIR)$(BINDIR)/checkpassword-remote-directory \
		$(DESTDIR)$(SBINDIR)/policy-remote-directory $(DESTDIR)$(PAMDIR)/$(PAM)

# Manual pages: scdoc(1) turns man/NAME.SECTION.scd into roff in man/build/NAME.SECTION;
# `make install` puts each under $(MANDIR)/manSECTION. man/check.sh is their test.
MANDIR   ?= $(PREFIX)/share/man
SCDOC    ?= scdoc
MANBUILD  = man/build
MANPAGES  = $(patsubst man/%.scd,$(MANBUILD)/%,$(wildcard man/*.scd))

man: $(MANPAGES)

# Through a temporary file: scdoc writes part of a page before it stops at an error.
$(MANBUILD)/%: man/%.scd
	@mkdir -p $(MANBUILD)
	$(SCDOC) <$< >$@.tmp && mv $@.tmp $@ || { rm -f $@.tmp; exit 1; }

install-man: man
	for page in $(MANPAGES); do \
		dir=$(DESTDIR)$(MANDIR)/man$${page##*.}; \
		$(INSTALL) -d $$dir && $(INSTALL) -m 644 $$page $$dir/ || exit 1; done

uninstall-man:
	for page in $(MANPAGES); do \
		rm -f $(DESTDIR)$(MANDIR)/man$${page##*.}/$${page##*/}; done

test-c: programs
	bash c-examples/tests/run.sh

clean:
	rm -rf $(BUILD) $(MANBUILD)

distclean: clean
	$(CARGO) clean

# Scripts for other programs (contrib/): the Dovecot Lua passdb that asks remote-directoryd's
# auth_http endpoint, for Dovecot 2.4, which has no checkpassword passdb (README, "Dovecot 2.4").
DATADIR ?= $(PREFIX)/share
CONTRIB = contrib/dovecot-passdb.lua

.PHONY: install-contrib uninstall-contrib
install-contrib:
	$(INSTALL) -d $(DESTDIR)$(DATADIR)/remote-directory
	$(INSTALL) -m 644 $(CONTRIB) $(DESTDIR)$(DATADIR)/remote-directory/

uninstall-contrib:
	rm -f $(addprefix $(DESTDIR)$(DATADIR)/remote-directory/,$(notdir $(CONTRIB)))
	-rmdir $(DESTDIR)$(DATADIR)/remote-directory 2>/dev/null

# remote-directoryd (daemon/, built by `make lib` with the library): the program in sbin/, a
# systemd unit that runs it as the unprivileged user remote-directory (created by
# systemd-sysusers from the sysusers.d file), with /run/remote-directory as RuntimeDirectory.
SYSTEMDUNITDIR ?= $(LIBDIR)/systemd/system
SYSUSERSDIR    ?= $(LIBDIR)/sysusers.d
SYSCONFDIR     ?= /etc
DAEMON          = $(RELEASE)/remote-directoryd

.PHONY: install-daemon uninstall-daemon
$(BUILD)/remote-directoryd.service: daemon/remote-directoryd.service.in Makefile | $(BUILD)
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' $< >$@

install-daemon: lib $(BUILD)/remote-directoryd.service
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	$(INSTALL) -m 755 $(DAEMON) $(DESTDIR)$(SBINDIR)/remote-directoryd
	$(INSTALL) -m 644 $(BUILD)/remote-directoryd.service \
		$(DESTDIR)$(SYSTEMDUNITDIR)/remote-directoryd.service
	$(INSTALL) -m 644 daemon/remote-directoryd.sysusers \
		$(DESTDIR)$(SYSUSERSDIR)/remote-directoryd.conf

uninstall-daemon:
	rm -f $(DESTDIR)$(SBINDIR)/remote-directoryd \
		$(DESTDIR)$(SYSTEMDUNITDIR)/remote-directoryd.service \
		$(DESTDIR)$(SYSUSERSDIR)/remote-directoryd.conf
