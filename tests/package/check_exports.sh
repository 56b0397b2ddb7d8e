#!/usr/bin/env bash
# The shared library exports vkrnn's public API and nothing else (ctest: shared_library_exports):
# every dynamic symbol it defines is a C entry point (vkrnn_*) or belongs to the vkrnn namespace
# (functions, typeinfo and vtables of public classes), and none is an internal: nothing of
# vkrnn::vk, vkrnn::detail, vkrnn::shaders, the ops' attention_detail, nlohmann_json or fmt. Its
# soname carries the version. Usage: check_exports.sh LIBVKRNN_SO MAJOR.MINOR
set -euo pipefail
lib=$1
soname_version=$2
fail() { echo "FAILED: $*" >&2; exit 1; }

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libvkrnn.so.$soname_version" ] || fail "soname is '$soname', expected libvkrnn.so.$soname_version"
! readelf -d "$lib" | grep -q "NEEDED.*libfmt" || fail "libvkrnn.so needs libfmt: fmt should be inside it"

symbols=$(nm -D --defined-only -C "$lib" | cut -d' ' -f3-)
count=$(wc -l <<<"$symbols")
# The qualified name, without a typeinfo/vtable prefix and without the parameter list.
names=$(sed -E 's/^(typeinfo name for|typeinfo for|vtable for|VTT for|guard variable for) //; s/\(.*$//' <<<"$symbols")
internal=$(grep -E '^vkrnn::(vk|detail|shaders|attention_detail)::|nlohmann|fmt::' <<<"$names" || true)
foreign=$(grep -vE '^(vkrnn_[a-z0-9_]+$|vkrnn::)' <<<"$names" || true)
if [ -n "$internal" ] || [ -n "$foreign" ]; then
  echo "internal symbols exported:" >&2
  head -n 40 <<<"$internal" >&2
  echo "symbols outside vkrnn:: and vkrnn_*:" >&2
  head -n 40 <<<"$foreign" >&2
  fail "libvkrnn.so exports more than its public API ($count symbols)"
fi
c_api=$(grep -cE '^vkrnn_' <<<"$names")
[ "$c_api" -ge 30 ] || fail "only $c_api C entry points exported"
grep -qx 'vkrnn::Seq2Seq::load' <<<"$names" || fail "vkrnn::Seq2Seq::load is not exported"
grep -qx 'vkrnn::Error' <<<"$names" || fail "vkrnn::Error's typeinfo is not exported (catching it would fail)"
echo "libvkrnn.so ($soname): $count exported symbols, $c_api of them C entry points; no internals"
