#!/usr/bin/env bash
# Builds what the microvm provider boots: OUTDIR/vmlinuz (the kernel of
# Debian's linux-image-amd64, fetched with `apt-get download` and unpacked
# into OUTDIR/.kernel, never installed into /boot) and OUTDIR/initramfs.cpio
# (uncompressed newc: the stripped ebb-agent and the libraries ldd names,
# busybox from busybox-static, the virtio modules the kernel builds as
# modules, and /init from this folder).
#
#   packaging/microvm/build.sh OUTDIR [AGENT_BIN]
#
# AGENT_BIN defaults to target/agent/ebb-agent, else target/release/ebb-agent,
# else target/debug/ebb-agent. Needs: apt-get (Debian), dpkg-deb,
# busybox-static (its cpio writes the archive), binutils (strip). The kernel is fetched once per OUTDIR;
# delete OUTDIR/.kernel to fetch the newest again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:?usage: build.sh OUTDIR [AGENT_BIN]}
agent=${2:-}
if [ -z "$agent" ]; then
  for c in "$root/target/agent/ebb-agent" "$root/target/release/ebb-agent" "$root/target/debug/ebb-agent"; do
    if [ -x "$c" ]; then agent=$c; break; fi
  done
fi
[ -n "$agent" ] && [ -x "$agent" ] || { echo "build.sh: no ebb-agent binary (give AGENT_BIN, or cargo build -p ebb-agent)" >&2; exit 66; }
need() { command -v "$1" >/dev/null || { echo "build.sh: \`$1\` is missing; install the Debian package $2" >&2; exit 69; }; }
need strip binutils
need dpkg-deb dpkg
need apt-get apt
busybox=/bin/busybox
if ! [ -x "$busybox" ] || ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  echo "build.sh: no static busybox at /bin/busybox; install the Debian package busybox-static" >&2
  exit 69
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The kernel: the package linux-image-amd64 depends on, unpacked.
kdir=$out/.kernel
if ! ls "$kdir"/x/boot/vmlinuz-* >/dev/null 2>&1; then
  rm -rf "$kdir" && mkdir -p "$kdir/x"
  image=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$image" ] || { echo "build.sh: apt-cache knows no linux-image-amd64; run apt-get update" >&2; exit 69; }
  (cd "$kdir" && apt-get download "$image" 2>&1 | grep -v 'unsandboxed' >&2 || true)
  deb=$(ls "$kdir"/linux-image-*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || { echo "build.sh: apt-get download $image failed" >&2; exit 69; }
  dpkg-deb -x "$deb" "$kdir/x"
  rm -f "$deb"
fi
vmlinuz=$(ls "$kdir"/x/boot/vmlinuz-* | head -1)
kver=${vmlinuz##*/vmlinuz-}
cp "$vmlinuz" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"

# The initramfs tree.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib/modules,proc,sys,dev,tmp,run,etc,ebb/host,root}
cp "$busybox" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
install -m 0755 "$here/init" "$stage/init"
strip --strip-all -o "$stage/usr/bin/ebb-agent" "$agent"
# The agent's shared libraries, at their own paths (ld.so included).
ldd "$agent" | grep -o '/[^ ]*' | while read -r lib; do
  mkdir -p "$stage$(dirname "$lib")"
  cp -L "$lib" "$stage$lib"
done
# Virtio over MMIO and its network card are modules in Debian's kernel;
# `order` lists them so each loads after what it depends on.
mods=$kdir/x/lib/modules/$kver/kernel
: > "$stage/lib/modules/order"
for m in net/core/failover drivers/net/net_failover drivers/virtio/virtio_ring \
  drivers/virtio/virtio drivers/virtio/virtio_mmio drivers/net/virtio_net \
  drivers/char/hw_random/virtio-rng; do
  name=${m##*/}
  if [ -f "$mods/$m.ko" ]; then
    cp "$mods/$m.ko" "$stage/lib/modules/$name.ko"
  elif [ -f "$mods/$m.ko.xz" ]; then
    xz -dc "$mods/$m.ko.xz" > "$stage/lib/modules/$name.ko"
  else
    # Built into this kernel (modules.builtin), or not there at all.
    grep -q "/${name}.ko" "$kdir/x/lib/modules/$kver/modules.builtin" 2>/dev/null && continue
    echo "build.sh: $kver has no module $m" >&2; exit 70
  fi
  echo "$name" >> "$stage/lib/modules/order"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$stage/etc/passwd"
echo "root:x:0:" > "$stage/etc/group"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) > "$out/initramfs.cpio.tmp"
mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"
echo "$out/vmlinuz ($kver)"
echo "$out/initramfs.cpio ($(du -h "$out/initramfs.cpio" | cut -f1))"
