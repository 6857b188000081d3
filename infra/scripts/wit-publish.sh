#!/usr/bin/env bash
# Publishes the WIT package of wit/ (bitvelocity:host: the worlds bv binds,
# with every package they use, bitvelocity:events among them, encoded in
# it) to an OCI registry with wkg (wasm-pkg-tools), as a Wasm artifact
# `<registry>/<prefix>/bitvelocity/host:<version>`.
#
#   bash infra/scripts/wit-publish.sh <registry>[/<prefix>] [--insecure]
#        [--version V | --pre ID] [--out FILE]
#
#   <registry>   the registry host (`ghcr.io`, `127.0.0.1:5000`), optionally
#                followed by a repository prefix (`ghcr.io/acme/shop`)
#   --insecure   plain HTTP (a local test registry)
#   --version V  the version to publish (default: the workspace version in
#                Cargo.toml); world.wit declares the package unversioned, so
#                the version is written into a copy of it before building
#   --pre ID     publish the pre-release <workspace version>-ID instead
#                (release.yml: `dev.<run number>` on a push to main)
#   --out FILE   also keep the built package (the published layer) there
#
# Offline apart from the registry itself: every dependency comes from the
# vendored wit/deps through `[overrides]` in a wkg.toml written to a temp
# dir, so `wkg build` (formerly `wkg wit build`) fetches nothing. The wkg
# config (namespace `bitvelocity` -> the registry) is written there too,
# not to the user's ~/.config/wasm-pkg. Credentials: wkg reads the Docker
# config file (`docker login`, docker/login-action) or
# WKG_REGISTRY_<HOST>_AUTH_BEARER (e.g. WKG_REGISTRY_GHCR_IO_AUTH_BEARER).
#
# A pre-release version (one with `-`, as release.yml publishes from main)
# skips wkg's semver check against the published neighbours: development
# builds may change the worlds incompatibly; releases are checked.
set -euo pipefail
source "$(dirname "$0")/env.sh"

WKG_VERSION="0.16.1"

registry_arg=""
insecure=false
version=""
pre=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --insecure) insecure=true; shift ;;
    --version) version="$2"; shift 2 ;;
    --pre) pre="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -*) echo "wit-publish.sh: unknown option $1" >&2; exit 2 ;;
    *)
      [ -z "$registry_arg" ] || { echo "wit-publish.sh: one registry only" >&2; exit 2; }
      registry_arg="$1"; shift ;;
  esac
done
if [ -z "$registry_arg" ]; then
  echo "usage: wit-publish.sh <registry>[/<prefix>] [--insecure] [--version V | --pre ID] [--out FILE]" >&2
  exit 2
fi
registry_host="${registry_arg%%/*}"
prefix=""
if [[ "$registry_arg" == */* ]]; then
  prefix="${registry_arg#*/}"
  prefix="${prefix%/}/"
fi
if [ -n "$version" ] && [ -n "$pre" ]; then
  echo "wit-publish.sh: --version and --pre exclude each other" >&2
  exit 2
fi
if [ -z "$version" ]; then
  version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
  if [ -n "$pre" ]; then version="$version-$pre"; fi
fi
[ -n "$version" ] || { echo "wit-publish.sh: no version" >&2; exit 1; }

if ! command -v wkg >/dev/null || ! wkg --version 2>/dev/null | grep -qF "$WKG_VERSION"; then
  say "installing wkg $WKG_VERSION (crates.io)"
  CARGO_TARGET_DIR="$HOME/.cache/bitvelocity/tools-target" \
    cargo install --locked wkg --version "$WKG_VERSION"
fi

work="$(mktemp -d -t bv-wit-publish.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# The package: world.wit with the version in its `package` line.
main_line="$(grep -m1 -E '^package [a-z0-9-]+:[a-z0-9-]+(@[^;]+)?;' wit/world.wit)"
package="$(printf '%s' "$main_line" | sed -E 's/^package ([a-z0-9-]+:[a-z0-9-]+).*/\1/')"
mkdir -p "$work/wit"
sed -E "s/^package $package(@[^;]+)?;/package $package@$version;/" wit/world.wit >"$work/wit/world.wit"

# The vendored packages it uses, found by following references (`ns:name/`)
# from world.wit through wit/deps until nothing new turns up. Only those:
# wit/deps holds two versions of some packages (wasi:clocks), which wkg's
# overrides (keyed by `ns:name`) cannot tell apart.
declare -A dir_of=()
for dir in wit/deps/*/; do
  name="$(grep -h -m1 -E '^package ' "$dir"*.wit | sed -E 's/^package ([a-z0-9-]+:[a-z0-9-]+).*/\1/')"
  if [ -n "${dir_of[$name]:-}" ]; then
    dir_of[$name]="ambiguous"
  else
    dir_of[$name]="$REPO_ROOT/${dir%/}"
  fi
done
# Comments are left out: they may name packages the WIT does not use.
references() {
  sed 's#//.*##' "$@" | grep -oE '\b[a-z][a-z0-9-]*:[a-z][a-z0-9-]*/' | sed 's#/$##' | sort -u || true
}
declare -A needed=()
queue=("$work/wit/world.wit")
while [ ${#queue[@]} -gt 0 ]; do
  files=("${queue[@]}")
  queue=()
  for ref in $(references "${files[@]}"); do
    [ "$ref" = "$package" ] && continue
    [ -n "${needed[$ref]:-}" ] && continue
    dir="${dir_of[$ref]:-}"
    case "$dir" in
      "") echo "wit-publish.sh: $ref is not vendored in wit/deps" >&2; exit 1 ;;
      ambiguous) echo "wit-publish.sh: wit/deps holds several versions of $ref" >&2; exit 1 ;;
    esac
    needed[$ref]="$dir"
    queue+=("$dir"/*.wit)
  done
done
{
  echo "[overrides]"
  for ref in $(printf '%s\n' "${!needed[@]}" | sort); do
    printf '"%s" = { path = "%s" }\n' "$ref" "${needed[$ref]}"
  done
} >"$work/wkg.toml"

namespace="${package%%:*}"
{
  printf '[namespace_registries]\n'
  printf '%s = { registry = "%s", metadata = { preferredProtocol = "oci", oci = { registry = "%s", namespacePrefix = "%s" } } }\n' \
    "$namespace" "$registry_host" "$registry_host" "$prefix"
  if $insecure; then
    printf '\n[registry."%s".oci]\nprotocol = "http"\n' "$registry_host"
  fi
} >"$work/config.toml"
export WKG_CONFIG_FILE="$work/config.toml"
export WKG_CACHE_DIR="$work/cache"

say "building $package@$version (${#needed[@]} vendored dependencies)"
built="$work/package.wasm"
(cd "$work" && wkg build --wit-dir wit --output "$built")
if [ "$(head -c 4 "$built" | od -An -tx1 | tr -d ' \n')" != "0061736d" ]; then
  echo "wit-publish.sh: $built is not a wasm binary" >&2
  exit 1
fi
if [ -n "$out" ]; then
  cp "$built" "$out"
fi

publish_flags=()
if [[ "$version" == *-* ]]; then
  publish_flags+=(--skip-semver-check)
fi
repository="$prefix${package/://}"
say "publishing $package@$version to $registry_host/$repository:$version"
(cd "$work" && wkg publish "${publish_flags[@]}" "$built")
printf '%s/%s:%s\n' "$registry_host" "$repository" "$version"
