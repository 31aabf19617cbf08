#!/bin/sh
# lib/core, the VZ backend, the HTTP API server (lib/server/server.c) and the
# Linux backends' stubs (lib/drivers/linux_only_stubs.c) build and link with
# the portable platform layer (lib/core/platform_posix.c, what a macOS build uses), checked on
# Linux as far as Linux can:
#   - every source compiles with the Linux-only interfaces poisoned
#     (portable-poison.h: eventfd, SO_PEERCRED, openat2, O_PATH, pipe2,
#     getrandom, MSG_NOSIGNAL, ...) and includes no Linux-only header itself
#     (<linux/*>, <sys/eventfd.h>, <sys/syscall.h>, ...);
#   - the objects link into one shared object with no undefined symbol
#     beyond libc, GLib, json-c and libmicrohttpd (so nothing in them calls into the
#     Linux-only backends or platform_linux.c);
#   - platform_posix.c's macOS branches type-check against declarations of
#     the macOS calls glibc lacks (portable-macos.h);
#   - the check can fail: a snippet using eventfd, and one including
#     <sys/eventfd.h>, are refused, naming it.
# Usage: portable.sh SOURCE_ROOT BUILD_ROOT CC...
set -eu
src=$1 bld=$2; shift 2
cc="$*"
deps="json-c glib-2.0 libmicrohttpd"
if ! pkg-config --exists $deps; then echo "1..0 # SKIP pkg-config: no $deps"; exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
here=$src/tests/compile
flags="-std=c11 -D_GNU_SOURCE -DHM_PLATFORM_POSIX=1 -fPIC -fvisibility=hidden -Werror=implicit-function-declaration
  -I$src/include -I$bld/include -I$src/lib -I$src/lib/core -I$src/lib/guest -I$src/lib/drivers/vz
  $(pkg-config --cflags $deps)"
sources=$(ls "$src"/lib/core/*.c | grep -v platform_linux.c)
sources="$sources $src/lib/guest/guest_path.c $src/lib/drivers/vz/vz_driver.c"
# --notify: the event rules, and the watcher stub a build without inotify uses
sources="$sources $src/lib/notify/notify_path.c $src/lib/notify/watcher_stub.c"
# The HTTP API and the Linux backends' stand-ins (what a macOS build links).
sources="$sources $src/lib/server/server.c $src/lib/drivers/linux_only_stubs.c"
deny='/linux/|/asm/|/asm-generic/|sys/eventfd\.h|sys/signalfd\.h|sys/syscall\.h|sys/prctl\.h|sys/epoll\.h|sys/inotify\.h|sys/mount\.h|sys/sendfile\.h|sys/fsuid\.h|sys/capability\.h'
n=0 status=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); echo "not ok $n - $1"; printf '%s\n' "$2" | sed 's/^/#   /'; status=1; }

# 1: compile with the poison, and look at what each source includes itself
# (-H prints the include tree: a header's includer is the nearest line one
# level up).
errs="" objs=""
for f in $sources; do
  o=$tmp/$(basename "$f" .c).o
  # shellcheck disable=SC2086
  if ! out=$($cc $flags -include "$here/portable-poison.h" -H -c "$f" -o "$o" 2>&1); then
    errs="$errs$(printf '%s\n' "$out" | grep -v '^\.' | head -5)
"
    continue
  fi
  objs="$objs $o"
  bad=$(printf '%s\n' "$out" | awk -v src="$src" -v deny="$deny" -v file="$f" '
    /^\.+ / { d = length($1); path[d] = $2; parent = d == 1 ? file : path[d - 1];
              if (index(parent, src) == 1 && $2 ~ deny) print parent " includes " $2 }')
  [ -z "$bad" ] || errs="$errs$bad
"
done
if [ -z "$errs" ]; then
  ok "lib/core + vz_driver.c + server.c + stubs compile with the Linux-only interfaces poisoned and no Linux header"
else
  notok "lib/core + vz_driver.c + server.c + stubs use Linux-only interfaces outside platform_linux.c" "$errs"
fi

# 2: link, nothing undefined but libc, GLib, json-c.
out=""
# shellcheck disable=SC2086
if [ -z "$errs" ] && out=$($cc -shared -o "$tmp/libcore-portable.so" $objs -Wl,--no-undefined \
    $(pkg-config --libs $deps) -pthread 2>&1); then
  ok "they link with nothing undefined (no call into the Linux backends)"
else
  notok "link of lib/core + vz_driver.c + server.c + stubs (portable)" "${out:-not linked: compile failed}"
fi

# 3: the macOS branches of platform_posix.c type-check.
# shellcheck disable=SC2086
if out=$($cc $flags -include "$here/portable-poison.h" -include "$here/portable-macos.h" \
    -fsyntax-only -Wall -Werror "$src/lib/core/platform_posix.c" 2>&1); then
  ok "platform_posix.c's macOS branches (getpeereid, F_GETPATH, O_NOFOLLOW_ANY, SO_NOSIGPIPE) type-check"
else
  notok "platform_posix.c with macOS declarations" "$out"
fi

# 4: the check can fail.
printf 'int f(void);\nint f(void) { return eventfd(0, 0); }\n' > "$tmp/use.c"
printf '#include <sys/eventfd.h>\n' > "$tmp/inc.c"
# shellcheck disable=SC2086
use=$($cc $flags -include "$here/portable-poison.h" -c "$tmp/use.c" -o "$tmp/use.o" 2>&1) && use_rc=0 || use_rc=1
# shellcheck disable=SC2086
inc=$($cc $flags -include "$here/portable-poison.h" -c "$tmp/inc.c" -o "$tmp/inc.o" 2>&1) && inc_rc=0 || inc_rc=1
# (GCC names the identifier in the message, clang on the source line.)
if [ $use_rc = 1 ] && printf '%s' "$use" | grep -q 'poisoned' &&
   printf '%s' "$use" | grep -q 'eventfd' && [ $inc_rc = 1 ] &&
   printf '%s' "$inc" | grep -q 'poisoned' && printf '%s' "$inc" | grep -q 'eventfd'; then
  ok "a use of eventfd, and including <sys/eventfd.h>, are refused naming it"
else
  notok "control snippets: use rc=$use_rc, include rc=$inc_rc" "$use
$inc"
fi
echo "1..$n"
exit $status
