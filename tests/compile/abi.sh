#!/bin/sh
# The library exports exactly the symbols in libhotmount.sym, no more, no
# less; the SONAME is versioned; dlopen + hm_version() works.
# Usage: abi.sh LIBRARY SYMFILE VERSION INCLUDE_DIR BUILD_INCLUDE_DIR
set -eu
lib=$1 sym=$2 version=$3 incdir=$4 bincdir=$5
status=0
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sed 's/@.*//' |
  grep -v '^HOTMOUNT_' | sort -u)
listed=$(sed -n 's/^ *\(hm_[A-Za-z0-9_]*\);$/\1/p' "$sym" | sort -u)
extra=$(printf '%s\n' "$exported" | comm -23 - "$(printf '%s\n' "$listed" > "$lib.listed"; echo "$lib.listed")")
missing=$(printf '%s\n' "$listed" | comm -13 "$(printf '%s\n' "$exported" > "$lib.exported"; echo "$lib.exported")" -)
rm -f "$lib.listed" "$lib.exported"
if [ -n "$extra" ]; then echo "not ok - exported but not in $sym: $extra"; status=1; else echo "ok - nothing exported beyond the version script"; fi
if [ -n "$missing" ]; then echo "not ok - in $sym but not exported: $missing"; status=1; else echo "ok - every listed symbol is exported"; fi
if printf '%s\n' "$exported" | grep -qv '^hm_'; then echo "not ok - unprefixed exports"; status=1; else echo "ok - all exports are hm_-prefixed"; fi
# Every HM_API declaration in the public headers is exported, and nothing else.
declared=$(cat "$incdir"/hotmount/*.h "$bincdir"/hotmount/version.h | tr '\n' ' ' | grep -o 'HM_API[^;(]*(' |
  grep -o 'hm_[A-Za-z0-9_]*($' | tr -d '(' | sort -u)
if [ "$declared" = "$exported" ]; then echo "ok - exports match the HM_API declarations"; else
  echo "not ok - exports differ from the headers' HM_API declarations:"
  printf '%s\n' "$declared" > "$lib.d"; printf '%s\n' "$exported" > "$lib.e"
  diff "$lib.d" "$lib.e" | sed 's/^/#   /'; rm -f "$lib.d" "$lib.e"; status=1
fi
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
case "$soname" in libhotmount.so.[0-9]*) echo "ok - SONAME $soname";; *) echo "not ok - SONAME '$soname'"; status=1;; esac
got=$(python3 -c 'import ctypes,sys; l=ctypes.CDLL(sys.argv[1]); l.hm_version.restype=ctypes.c_char_p; print(l.hm_version().decode())' "$lib")
if [ "$got" = "$version" ]; then echo "ok - dlopen + hm_version() = $got"; else echo "not ok - hm_version() = '$got', want $version"; status=1; fi
# ABI shapes (house style): no off_t (its size follows _FILE_OFFSET_BITS), no
# enums anywhere in the public headers (their size is the compiler's choice;
# codes are #defines), and complete structs only behind pointers in HM_API
# declarations (never passed or returned by value).
hdrs="$incdir"/hotmount/*.h
if grep -n '\boff_t\b' $hdrs >/dev/null; then echo "not ok - off_t in public headers: $(grep -ln '\boff_t\b' $hdrs)"; status=1; else echo "ok - no off_t in the public headers"; fi
if grep -nE '^[^/*]*\benum\b' $hdrs >/dev/null; then echo "not ok - enum in public headers: $(grep -nE '^[^/*]*\benum\b' $hdrs | head -3)"; status=1; else echo "ok - no enums in the public headers"; fi
complete=$(cat $hdrs | tr '\n' ' ' | grep -oE 'typedef struct [A-Za-z0-9_]* *\{[^}]*\} *[A-Za-z0-9_]+ *;' |
  sed -E 's/.*\} *([A-Za-z0-9_]+) *;/\1/' | sort -u)
byval=""
for t in $complete; do
  if cat $hdrs | tr '\n' ' ' | grep -oE 'HM_API[^;]*;' | grep -E "(\(|,| )(const )?$t( +[A-Za-z_]|[,)])" >/dev/null; then
    byval="$byval $t"
  fi
done
if [ -n "$byval" ]; then echo "not ok - structs passed by value in HM_API declarations:$byval"; status=1; else echo "ok - complete structs ($(echo $complete | tr '\n' ' ')) only behind pointers"; fi
exit $status
