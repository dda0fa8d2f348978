#!/usr/bin/env bash
# Builds the ebb-agent and ebb-controller (with ebbctl) packages, .deb and
# .rpm: the controller from a release build, the agent from the size-built
# `agent` profile (Cargo.toml). Their version is the workspace version; the
# package revision (deb) / release (rpm) is --revision (default 1).
#
#   packaging/build.sh [--revision N] [--out DIR] [--no-build]
#
# Writes into DIR (default target/packages):
#   ebb-agent_<version>-<N>_<arch>.deb       ebb-agent-<version>-<N>.<arch>.rpm
#   ebb-controller_<version>-<N>_<arch>.deb  ebb-controller-<version>-<N>.<arch>.rpm
# and prints their paths. --no-build packages the release binaries as they
# are (target/release/ebb-controller, ebbctl; target/agent/ebb-agent). cargo-deb and cargo-generate-rpm are installed with
# `cargo install --locked` when missing. The packages' contents are set in
# [package.metadata.deb] and [package.metadata.generate-rpm] of
# agent/Cargo.toml and controller/Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: a new release of either changes what the packages contain.
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
PACKAGES=(ebb-agent ebb-controller)

revision=1
out=target/packages
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --revision) revision=${2:?--revision needs a number}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
case "$revision" in
  '' | *[!0-9]*) echo "build.sh: --revision must be a number, not '$revision'" >&2; exit 64 ;;
esac

say() { printf 'build.sh: %s\n' "$*"; }

# `cargo install` puts tools here; make sure they are found.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
need_tool() {
  local bin=$1 crate=$2 version=$3
  if ! command -v "$bin" >/dev/null; then
    say "installing $crate $version (once; a few minutes)"
    cargo install --locked --quiet "$crate" --version "$version"
  fi
}
need_tool cargo-deb cargo-deb "$CARGO_DEB_VERSION"
need_tool cargo-generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

target_dir=${CARGO_TARGET_DIR:-target}
if [ "$build" = 1 ]; then
  say "release build of ebb-controller and ebbctl; size-built (profile agent) ebb-agent"
  cargo build --release --locked -p ebb-controller -p ebbctl --bins
  cargo build --profile agent --locked -p ebb-agent
fi
# Where each packaged binary is built.
profile_of() { if [ "$1" = ebb-agent ]; then echo agent; else echo release; fi; }
for bin in ebb-agent ebb-controller ebbctl; do
  if [ ! -x "$target_dir/$(profile_of $bin)/$bin" ]; then
    echo "build.sh: $target_dir/$(profile_of $bin)/$bin is missing; run without --no-build" >&2
    exit 1
  fi
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
target_dir=$(cd "$target_dir" && pwd)

# ebbctl's man pages and shell completions, made by the ebbctl being
# packaged from its own command tree (so they match its flags), into
# target/release/ebbctl-share, where both packages' assets name them.
share="$target_dir/release/ebbctl-share"
rm -rf "$share"
mkdir -p "$share/completions"
say "ebbctl: man pages and shell completions"
"$target_dir/release/ebbctl" man --dir "$share/man1"
gzip -9n "$share/man1/"*.1
for shell in bash zsh fish; do
  "$target_dir/release/ebbctl" completion "$shell" >"$share/completions/ebbctl.$shell"
done

# cargo-generate-rpm packs binaries as they are: give it stripped copies in
# a target dir of their own rather than strip cargo's in place.
stage="$target_dir/packaging-stage"
rm -rf "$stage"
mkdir -p "$stage/release"
for bin in ebb-agent ebb-controller ebbctl; do
  cp "$target_dir/$(profile_of $bin)/$bin" "$stage/release/$bin"
  strip --strip-unneeded "$stage/release/$bin"
done
cp -r "$share" "$stage/release/"

for pkg in "${PACKAGES[@]}"; do
  dir=${pkg#ebb-}
  rm -f "$out/${pkg}_"*.deb "$out/${pkg}-"[0-9]*.rpm
  say "$pkg: .deb"
  cargo deb --quiet --no-build --locked -p "$pkg" --profile "$(profile_of "$pkg")" --deb-revision "$revision" --output "$out" >/dev/null
  say "$pkg: .rpm"
  # Run in the crate's folder so the metadata's relative paths (../packaging)
  # are read from there.
  (cd "$dir" && cargo generate-rpm --target-dir "$stage" \
    --set-metadata "release = \"$revision\"" --output "$out")
done
rm -rf "$stage"

ls -1 "$out"/*.deb "$out"/*.rpm
