#!/usr/bin/env -S sh -eu \c (an example exec provider program for libvirt; NOT run by ebb's tests)
# ebb `exec` provider program: each instance is a libvirt domain booted from
# a copy-on-write overlay of a cloud image, configured by cloud-init.
#
#   libvirt.sh launch|release|list   (JSON on stdin, JSON on stdout; docs/providers.md)
#
# Needs virt-install, virsh, qemu-img, cloud-localds (cloud-image-utils) and
# jq. exec.env: LIBVIRT_NETWORK (default "default"), CONTROLLER (its address
# as the VMs reach it, e.g. 192.168.122.1:7440), POOL (where disks go,
# default /var/lib/libvirt/images), AGENT_DEB (path of the ebb-agent .deb
# on this host, copied in through the seed). exec.params: image (a cloud
# image, qcow2), vcpus, memory_mib.
#
# The domain is named ebb-<instance id>; its <metadata> carries the tag, so
# `list` finds ebb's domains of this controller.
set -eu

verb=${1:-}
input=$(cat)
POOL=${POOL:-/var/lib/libvirt/images}
NET=${LIBVIRT_NETWORK:-default}
NS=https://ebb.dev/exec

address_of() { # first IPv4 the DHCP lease gives the domain
  virsh domifaddr "$1" 2>/dev/null | awk '/ipv4/ {split($4, a, "/"); print a[1]; exit}'
}

case "$verb" in
launch)
  id=$(printf '%s' "$input" | jq -r .instance_id)
  p() { printf '%s' "$input" | jq -r --arg k "$1" --arg d "$2" '.configuration.params[$k] // $d'; }
  dom="ebb-$id"
  qemu-img create -q -f qcow2 -F qcow2 -b "$(p image '')" "$POOL/$dom.qcow2"
  seed=$(mktemp -d)
  toml=$(printf '%s' "$input" | jq -r .agent.agent_toml | sed "s|^controller = .*|controller = \"$CONTROLLER\"|")
  printf '%s' "$input" | jq -r --arg toml "$toml" --arg deb "$(base64 -w0 "$AGENT_DEB")" '
    "#cloud-config\n" + ({
      write_files: [
        {path: "/etc/ebb/agent.toml", content: $toml},
        {path: "/etc/ebb/ca.crt", permissions: "0600", content: .agent.ca_pem},
        {path: "/etc/ebb/agent.crt", permissions: "0600", content: .agent.cert_pem},
        {path: "/etc/ebb/agent.key", permissions: "0600", content: .agent.key_pem},
        {path: "/tmp/ebb-agent.deb", encoding: "b64", content: $deb}
      ],
      runcmd: [["apt-get", "install", "-y", "/tmp/ebb-agent.deb"], ["systemctl", "enable", "--now", "ebb-agent"]]
    } | tojson)' > "$seed/user-data"
  echo "instance-id: $id" > "$seed/meta-data"
  cloud-localds "$POOL/$dom-seed.iso" "$seed/user-data" "$seed/meta-data"
  rm -rf "$seed"
  tag=$(printf '%s' "$input" | jq -r '.tag | to_entries | map("<tag key=\"\(.key)\">\(.value)</tag>") | join("")')
  virt-install --name "$dom" --import --noautoconsole --os-variant detect=on,require=off \
    --vcpus "$(p vcpus 1)" --memory "$(p memory_mib 1024)" \
    --disk "$POOL/$dom.qcow2" --disk "$POOL/$dom-seed.iso,device=cdrom" \
    --network "network=$NET" >&2
  virsh metadata "$dom" "$NS" --key ebb --set "<ebb>$tag</ebb>" --config --live >&2
  # Wait (within launch_timeout_ms) for the address.
  while [ -z "$(address_of "$dom")" ]; do sleep 1; done
  jq -cn --arg p "$dom" --arg a "$(address_of "$dom")" '{provider_id: $p, address: $a}'
  ;;
release)
  dom="ebb-$(printf '%s' "$input" | jq -r .instance_id)"
  virsh destroy "$dom" >/dev/null 2>&1 || true
  virsh undefine "$dom" >/dev/null 2>&1 || true
  rm -f "$POOL/$dom.qcow2" "$POOL/$dom-seed.iso"
  echo '{}'
  ;;
list)
  want=$(printf '%s' "$input" | jq -r '.tag["ebb:controller"]')
  for dom in $(virsh list --all --name | grep '^ebb-' || true); do
    meta=$(virsh metadata "$dom" "$NS" 2>/dev/null || true)
    case "$meta" in *"<tag key=\"ebb:controller\">$want</tag>"*) ;; *) continue ;; esac
    state=$(virsh domstate "$dom")
    jq -cn --arg i "${dom#ebb-}" --arg p "$dom" --arg a "$(address_of "$dom")" --arg s "$state" \
      '{instance_id: $i, provider_id: $p, address: (if $a == "" then null else $a end), alive: ($s == "running")}'
  done | jq -cs '{instances: .}'
  ;;
*)
  echo "usage: libvirt.sh launch|release|list (JSON on stdin)" >&2
  exit 64
  ;;
esac
