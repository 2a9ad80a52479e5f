#!/bin/sh
# Fails when kernels/dot_amd64.s or kernels/dot_amd64.go differ from what the
# avo generator in this directory produces (run `go generate ./kernels/` to
# refresh them). Needs the go command and avo from the module cache or proxy.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$here" && GOWORK=off "${GO:-go}" run . -dir "$tmp")
status=0
for f in dot_amd64.s dot_amd64.go; do
	if ! cmp -s "$tmp/$f" "$here/../$f"; then
		echo "kernels/$f is stale: run 'go generate ./kernels/'" >&2
		diff -u "$here/../$f" "$tmp/$f" | head -40 >&2 || true
		status=1
	fi
done
[ "$status" -eq 0 ] && echo "kernels: generated assembly is current"
exit "$status"
