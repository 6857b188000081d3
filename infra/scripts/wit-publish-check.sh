#!/usr/bin/env bash
# Checks infra/scripts/wit-publish.sh against a real OCI registry: starts
# Debian's docker-registry (the CNCF distribution registry) on a free port
# of 127.0.0.1 with its storage in a temp dir, publishes the WIT package to
# it, and verifies through the registry's HTTP API that the tag exists and
# that its one layer is the built package (a wasm binary, `\0asm`, with the
# digest of the file wit-publish.sh built). Stops the registry and removes
# the temp dir however it ends.
#
#   bash infra/scripts/wit-publish-check.sh
set -euo pipefail
source "$(dirname "$0")/env.sh"

if ! command -v docker-registry >/dev/null; then
  say "installing docker-registry (Debian package)"
  sudo=()
  if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
  # Only the binary is needed: keep apt from starting its service.
  made_policy=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
    made_policy=true
  fi
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends docker-registry >/dev/null
  if $made_policy; then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; fi
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    "${sudo[@]}" systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

tmp="$(mktemp -d -t bv-wit-registry.XXXXXX)"
registry_pid=""
cleanup() {
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$tmp/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $tmp/data
http:
  addr: 127.0.0.1:$port
EOF
say "starting docker-registry on 127.0.0.1:$port"
docker-registry serve "$tmp/config.yml" >"$tmp/registry.log" 2>&1 &
registry_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 50); do
  if curl -fsS -o /dev/null "$base/v2/" 2>/dev/null; then break; fi
  if ! kill -0 "$registry_pid" 2>/dev/null; then
    cat "$tmp/registry.log" >&2
    echo "wit-publish-check: the registry did not start" >&2
    exit 1
  fi
  sleep 0.2
done
curl -fsS -o /dev/null "$base/v2/" || { cat "$tmp/registry.log" >&2; exit 1; }

# A release version: wkg checks it against the published neighbours
# (none yet) and refuses it the second time below.
version="0.1.0"
prefix="bv-check"
ref="$(bash infra/scripts/wit-publish.sh "127.0.0.1:$port/$prefix" --insecure \
  --version "$version" --out "$tmp/package.wasm")"
repo="$prefix/bitvelocity/host"
[ "$ref" = "127.0.0.1:$port/$repo:$version" ] || {
  echo "wit-publish-check: wit-publish.sh printed '$ref'" >&2
  exit 1
}

say "checking $repo:$version in the registry"
tags="$(curl -fsS "$base/v2/$repo/tags/list")"
printf '%s' "$tags" | jq -e --arg v "$version" '.tags | index($v) != null' >/dev/null || {
  echo "wit-publish-check: tag $version missing: $tags" >&2
  exit 1
}
manifest="$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "$base/v2/$repo/manifests/$version")"
layers="$(printf '%s' "$manifest" | jq '.layers | length')"
[ "$layers" = 1 ] || { echo "wit-publish-check: $layers layers: $manifest" >&2; exit 1; }
media_type="$(printf '%s' "$manifest" | jq -r '.layers[0].mediaType')"
[ "$media_type" = "application/wasm" ] || {
  echo "wit-publish-check: layer media type $media_type" >&2
  exit 1
}
digest="$(printf '%s' "$manifest" | jq -r '.layers[0].digest')"
curl -fsS -o "$tmp/layer.wasm" "$base/v2/$repo/blobs/$digest"
magic="$(head -c 4 "$tmp/layer.wasm" | od -An -tx1 | tr -d ' \n')"
[ "$magic" = "0061736d" ] || {
  echo "wit-publish-check: the layer starts with $magic, not the wasm magic 0061736d" >&2
  exit 1
}
[ "sha256:$(sha256sum "$tmp/layer.wasm" | cut -d' ' -f1)" = "$digest" ] || {
  echo "wit-publish-check: the layer does not match its digest $digest" >&2
  exit 1
}
cmp -s "$tmp/layer.wasm" "$tmp/package.wasm" || {
  echo "wit-publish-check: the layer is not the package wit-publish.sh built" >&2
  exit 1
}

# Publishing the same version again is refused (no silent overwrite).
if bash infra/scripts/wit-publish.sh "127.0.0.1:$port/$prefix" --insecure \
  --version "$version" >/dev/null 2>"$tmp/again.log"; then
  echo "wit-publish-check: publishing $version twice succeeded" >&2
  exit 1
fi
grep -qi "already exists" "$tmp/again.log" || {
  cat "$tmp/again.log" >&2
  echo "wit-publish-check: the second publish failed for another reason" >&2
  exit 1
}
say "wit-publish-check: $repo:$version published, a $(wc -c <"$tmp/layer.wasm")-byte wasm package"
