#!/bin/sh
# llama.sh - builds llama.cpp's llama-server (CPU, shared libllama.so) for
# `make test-llama`, from the llama.cpp source that the npm package
# node-llama-cpp carries (llama/gitRelease.bundle, a git bundle of one
# llama.cpp release), so that only Debian's packages and the npm registry
# are needed.
#
# In:  $1: the folder to build in (build/llama).
# Out: $1/src/build/bin/llama-server and its shared libraries; a second
#      run finds it built and does nothing.
# Assumes: root or the tools already there (cmake, g++, git, npm);
#      building takes some 5 minutes on 2 cores.
set -eu

DIR=$1
PKG=node-llama-cpp@3.22.1
# sha256 of that package's tarball as the registry served it
PKG_SHA=a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f
BIN=$DIR/src/build/bin/llama-server

[ -x "$BIN" ] && exit 0

need=""
for t in cmake:cmake g++:g++ git:git npm:npm; do
	command -v "${t%%:*}" >/dev/null 2>&1 || need="$need ${t#*:}"
done
if [ -n "$need" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "llama.sh: needs$need (run as root to install them)" >&2
		exit 1
	fi
	echo "llama.sh: installing$need"
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null
fi

mkdir -p "$DIR/pkg"
if [ ! -d "$DIR/src/.git" ]; then
	echo "llama.sh: fetching $PKG (llama.cpp's source) from npm"
	(cd "$DIR/pkg" && rm -f node-llama-cpp-*.tgz &&
	 npm pack --silent "$PKG" >/dev/null)
	tgz=$(ls "$DIR"/pkg/node-llama-cpp-*.tgz)
	echo "$PKG_SHA  $tgz" | sha256sum -c --quiet - || {
		echo "llama.sh: $tgz is not the package expected" >&2
		exit 1
	}
	tar xzf "$tgz" -C "$DIR/pkg" package/llama/gitRelease.bundle \
	    package/llama/llama.cpp.info.json
	rm -rf "$DIR/src"
	git -c advice.detachedHead=false clone -q \
	    "$DIR/pkg/package/llama/gitRelease.bundle" "$DIR/src"
fi
tag=$(sed -n 's/.*"tag": "\(.*\)".*/\1/p' \
	"$DIR/pkg/package/llama/llama.cpp.info.json")
echo "llama.sh: building llama-server (llama.cpp $tag; some 5 minutes on 2 cores)"
cmake -S "$DIR/src" -B "$DIR/src/build" -DCMAKE_BUILD_TYPE=Release \
	-DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF \
	>"$DIR/cmake.log" 2>&1 || { tail -20 "$DIR/cmake.log" >&2; exit 1; }
cmake --build "$DIR/src/build" --target llama-server -j"$(nproc)" \
	>"$DIR/build.log" 2>&1 || { tail -30 "$DIR/build.log" >&2; exit 1; }
[ -x "$BIN" ]
echo "llama.sh: $BIN"
