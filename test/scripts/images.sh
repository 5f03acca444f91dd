#!/usr/bin/env bash
# images.sh OUTDIR: build vigil's test images as OCI archives.
#
#   OUTDIR/testapp.tar  localhost/vigil-testapp:latest  (test/images/testapp)
#   OUTDIR/pause.tar    localhost/vigil-pause:latest    (test/images/pause, the CRI sandbox image)
#
# The binaries are static (CGO_ENABLED=0) and the archives reproducible, so an
# archive is rewritten only when its binary changed.
set -euo pipefail

out=${1:?usage: images.sh OUTDIR}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GO=${GO:-go}
mkdir -p "$out/bin"
out=$(cd "$out" && pwd)

cd "$root"
export CGO_ENABLED=0 GOOS=linux
flags=(-trimpath -buildvcs=false -ldflags='-s -w')
"$GO" build "${flags[@]}" -o "$out/bin/mkimage" ./test/tools/mkimage

# build NAME IMAGE: compile test/images/NAME and pack it as OUTDIR/NAME.tar.
build() {
	local name=$1 image=$2 bin=$out/bin/$1 tar=$out/$1.tar sum
	"$GO" build "${flags[@]}" -o "$bin" "./test/images/$name"
	sum=$(sha256sum "$bin" | cut -d' ' -f1)
	if [[ -f $tar && -f $tar.src && $(<"$tar.src") == "$sum $image" ]]; then
		echo "images: $tar up to date"
		return
	fi
	"$out/bin/mkimage" -bin "$bin" -name "$image" -out "$tar"
	echo "$sum $image" >"$tar.src"
	echo "images: wrote $tar ($image)"
}

build testapp localhost/vigil-testapp:latest
build pause localhost/vigil-pause:latest
