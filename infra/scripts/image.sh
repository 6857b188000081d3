#!/usr/bin/env bash
# Builds the runtime image: `bv` (and `bv-kafka-bridge` when built) on an
# otherwise empty root, run as a non-root user, without a Docker daemon
# (umoci writes the OCI layout, skopeo pushes it). SpinKube runs it as a
# SpinAppExecutor's spinImage: `<image> up --listen 0.0.0.0:80 -f <app>
# --runtime-config-file /runtime-config.toml [--component-id X]...`.
#
#   bash infra/scripts/image.sh [--out DIR] [--tag TAG] [--bv PATH]
#        [--bridge PATH] [--push REF] [--insecure]
#
# With no options it builds bv in release mode and writes the layout to
# target/image (tag: the git commit). The binaries are dynamically linked
# against glibc, so the image carries exactly the shared libraries `ldd`
# names for them, and the CA bundle for registries and outbound TLS.
# SpinKube passes no environment of ours, so the image's own settings say
# what bv needs in a pod: the admin endpoints on all addresses (probes and
# scrapes), and a drain that ends before the default 30 s grace period.
set -euo pipefail
source "$(dirname "$0")/env.sh"

out="$REPO_ROOT/target/image"
tag="$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo dev)"
bv_bin=""
bridge_bin=""
push_ref=""
insecure=false
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --bv) bv_bin="$2"; shift 2 ;;
    --bridge) bridge_bin="$2"; shift 2 ;;
    --push) push_ref="$2"; shift 2 ;;
    --insecure) insecure=true; shift ;;
    *) echo "image.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

for tool in umoci skopeo; do
  if ! command -v "$tool" >/dev/null; then
    say "installing $tool (Debian package)"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$tool" >/dev/null
  fi
done

if [ -z "$bv_bin" ]; then
  say "building bv (release)"
  cargo build --release -p bv -p bv-kafka-bridge
  bv_bin="$BV"
  bridge_bin="$CARGO_TARGET_DIR/release/bv-kafka-bridge"
fi
[ -x "$bv_bin" ] || { echo "image.sh: no bv binary at $bv_bin" >&2; exit 1; }

# The UID/GID the runtime runs as: not root, and not a name a host knows.
uid=65532
root="$(mktemp -d -t bv-image-root.XXXXXX)"
trap 'rm -rf "$root"' EXIT
# mktemp makes it 0700, and the image's / takes the mode of this directory.
chmod 0755 "$root"

say "assembling the image root in $root"
install -d "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
# The runtime's home (compiled-code and registry caches): writable by the
# runtime's user without chown, so the image builds as any user.
install -d -m 1777 "$root/home/bv"
copy_binary() {
  # Debug sections (line tables) are dropped: they would double the size.
  strip --strip-debug -o "$root/usr/local/bin/$(basename "$2")" "$1"
  # `ldd` prints `name => /path (addr)` and the loader as `/path (addr)`.
  ldd "$1" | awk '/=> \// {print $3} /^\t\// {print $1}' | while read -r lib; do
    install -D -m 0644 "$lib" "$root$lib"
  done
}
copy_binary "$bv_bin" bv
if [ -n "$bridge_bin" ] && [ -x "$bridge_bin" ]; then
  copy_binary "$bridge_bin" bv-kafka-bridge
fi
chmod 0755 "$root"/usr/local/bin/*
# The loader must stay executable.
find "$root" -name 'ld-linux*' -exec chmod 0755 {} +
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0::/root:/sbin/nologin\nbv:x:%s:%s::/home/bv:/sbin/nologin\n' "$uid" "$uid" >"$root/etc/passwd"
printf 'root:x:0:\nbv:x:%s:\n' "$uid" >"$root/etc/group"

say "writing the OCI layout $out:$tag"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
umoci init --layout "$out"
umoci new --image "$out:$tag"
# Not as root, umoci cannot record other owners: --rootless records the
# files as root's (the runtime's home is writable by mode, above).
rootless=()
if [ "$(id -u)" != 0 ]; then rootless=(--rootless); fi
umoci insert "${rootless[@]}" --image "$out:$tag" "$root" /
revision="$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
umoci config --image "$out:$tag" \
  --os linux --architecture amd64 \
  --config.user "$uid:$uid" \
  --config.entrypoint /usr/local/bin/bv \
  --config.cmd up \
  --config.env HOME=/home/bv \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.env BV_ADMIN_LISTEN=0.0.0.0:9400 \
  --config.env BV_DRAIN_TIMEOUT=25 \
  --config.workingdir /home/bv \
  --config.exposedports 80/tcp \
  --config.exposedports 9400/tcp \
  --config.label org.opencontainers.image.title=bv \
  --config.label "org.opencontainers.image.revision=$revision" \
  --config.label org.opencontainers.image.source=https://github.com/bitvelocity/bitvelocity
umoci gc --layout "$out"
size=$(du -sk "$out" | cut -f1)
say "image $out:$tag (${size} KiB)"

if [ -n "$push_ref" ]; then
  say "pushing to $push_ref"
  tls=()
  if $insecure; then tls=(--dest-tls-verify=false); fi
  skopeo copy "${tls[@]}" "oci:$out:$tag" "docker://$push_ref"
fi
