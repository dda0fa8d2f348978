#!/usr/bin/env bash
# Tests the packages the way an operator uses them, on this machine: as root
# on Debian (CI's machine). It
#   - builds the packages twice with packaging/build.sh (revisions 1 and 2),
#   - inspects both .rpm files (rpm -qlp, rpm -qp --scripts), installs them
#     into a scratch root (rpm -i --root), checks owners and modes there
#     (rpm -V and stat) and runs the binaries it unpacked,
#   - installs both .deb files with dpkg -i and checks files, users, modes,
#     conffiles and the systemd units (systemd-analyze verify), that the bash
#     completion loads and that `man ebbctl` renders,
#   - starts the installed controller by hand (systemd does not run here) as
#     its user with the packaged config, issues an agent certificate with
#     ebbctl the way docs/install.md says,
#   - upgrades to revision 2 with edited configs and checks the edits stay,
#   - starts the installed agent by hand as its user with the packaged
#     config and sees it connect (the controller's /metrics and ebbctl),
#     both inside an imitation of their units' sandbox (read-only system,
#     only the state dir writable, private /tmp, no capabilities),
#   - removes (config and state stay) and purges (they go).
# It installs rpm, curl, systemd (for systemd-analyze) and man-db with apt when
# missing. Every check prints "ok" or "FAIL" with what it saw; the exit
# status is non-zero when any failed.
#
# It installs and purges ebb-agent and ebb-controller and deletes their
# users at the end: with either installed, or /etc/ebb or /var/lib/ebb
# present, it refuses to start unless EBB_PACKAGING_TEST_CLEAN=1 (or CI=true)
# says it may remove them first.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPC=127.0.0.1:7440
HTTP=127.0.0.1:9440
# The host's instance id: minted by the controller when it joins.
INSTANCE=""
EDIT_MARK="# edited by packaging/test.sh"

passed=0
failed=0
started=$(date +%s)
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/     /'; }
# check DESCRIPTION COMMAND...: ok when the command succeeds; its output
# is shown on failure.
check() {
  local desc=$1 output
  shift
  if output=$("$@" 2>&1); then ok "$desc"; else fail "$desc" "$output"; fi
}
# expect_eq DESCRIPTION WANT GOT
expect_eq() {
  if [ "$2" = "$3" ]; then ok "$1"; else fail "$1" "want: $2"$'\n'"got:  $3"; fi
}
step() { printf '\n-- %s\n' "$*"; }
die() { printf 'packaging/test.sh: %s\n' "$*" >&2; exit 1; }
# eventually SECONDS COMMAND...: polls until the command succeeds.
eventually() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

[ "$(id -u)" = 0 ] || die "run it as root: it installs packages and creates users"
if ! command -v dpkg >/dev/null || ! command -v apt-get >/dev/null; then
  die "it needs a Debian system (dpkg, apt-get)"
fi

# --- a clean machine ---------------------------------------------------------
installed() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qv '^not-installed$'; }
leftovers() {
  local p
  for p in ebb-agent ebb-controller; do installed "$p" && echo "package $p"; done
  for p in /etc/ebb /var/lib/ebb; do [ -e "$p" ] && echo "$p"; done
  for p in ebb-agent ebb-controller; do getent passwd "$p" >/dev/null && echo "user $p"; done
  return 0
}
clean_machine() {
  dpkg --purge ebb-agent ebb-controller >/dev/null 2>&1 || true
  rm -rf /etc/ebb /var/lib/ebb
  local u
  for u in ebb-agent ebb-controller; do
    if getent passwd "$u" >/dev/null; then userdel "$u"; fi
    if getent group "$u" >/dev/null; then groupdel "$u"; fi
  done
}
found=$(leftovers | paste -sd, - | sed 's/,/, /g')
if [ -n "$found" ]; then
  if [ "${EBB_PACKAGING_TEST_CLEAN:-}" = 1 ] || [ "${CI:-}" = true ]; then
    echo "removing what an earlier run left: $found"
    clean_machine
  else
    die "this machine already has $found; set EBB_PACKAGING_TEST_CLEAN=1 to let the test purge and delete them"
  fi
fi

work=$(mktemp -d /tmp/ebb-packaging-test.XXXXXX)
chmod 0755 "$work"
pids=()
finished=0
cleanup() {
  local pid
  if [ "$finished" = 0 ]; then
    echo "packaging: stopped early: $failed of $((passed + failed)) checks so far FAILED" >&2
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  clean_machine
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "packaging/test.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR

apt_updated=0
need_apt() {
  local bin=$1 pkg=$2
  command -v "$bin" >/dev/null && return 0
  echo "installing $pkg (for $bin) with apt"
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  command -v "$bin" >/dev/null || die "$pkg did not bring $bin"
}
need_apt rpm rpm
need_apt curl curl
need_apt systemd-analyze systemd
need_apt man man-db

port_free() { ! (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for addr in "$GRPC" "$HTTP"; do
  port_free "$addr" || die "$addr is in use; the packaged configs listen there: stop what holds it"
done

# --- build -------------------------------------------------------------------
step "build: packaging/build.sh, revisions 1 and 2"
t0=$(date +%s)
packaging/build.sh --out "$work/r1"
packaging/build.sh --no-build --revision 2 --out "$work/r2"
echo "built in $(($(date +%s) - t0)) s"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || die "cannot read the workspace version from Cargo.toml"
arch=$(dpkg --print-architecture)
rpm_arch=$(uname -m)
deb() { echo "$work/r$2/${1}_${version}-$2_${arch}.deb"; }
rpmfile() { echo "$work/r$2/$1-${version}-$2.${rpm_arch}.rpm"; }
for p in ebb-agent ebb-controller; do
  for r in 1 2; do
    check "$(basename "$(deb $p $r)") was built" test -s "$(deb $p $r)"
    check "$(basename "$(rpmfile $p $r)") was built" test -s "$(rpmfile $p $r)"
  done
  expect_eq "$p.deb carries the workspace version" "${version}-1" \
    "$(dpkg-deb -f "$(deb $p 1)" Version)"
done

# --- the .rpm files ----------------------------------------------------------
step "rpm: files, config files and scriptlets"
expect_eq "ebb-agent.rpm: its files (rpm -qlp)" \
  "/etc/ebb/agent.toml /usr/bin/ebb-agent /usr/lib/systemd/system/ebb-agent.service /usr/share/doc/ebb-agent/install.md" \
  "$(rpm -qlp "$(rpmfile ebb-agent 1)" 2>/dev/null | sort | xargs)"
expect_eq "ebb-controller.rpm: its files (rpm -qlp), man pages aside" \
  "/etc/ebb/controller.toml /usr/bin/ebb-controller /usr/bin/ebbctl /usr/lib/systemd/system/ebb-controller.service /usr/share/bash-completion/completions/ebbctl /usr/share/doc/ebb-controller/install.md /usr/share/fish/vendor_completions.d/ebbctl.fish /usr/share/zsh/site-functions/_ebbctl" \
  "$(rpm -qlp "$(rpmfile ebb-controller 1)" 2>/dev/null | grep -v '^/usr/share/man/man1/' | sort | xargs)"
rpm_man=$(rpm -qlp "$(rpmfile ebb-controller 1)" 2>/dev/null | grep '^/usr/share/man/man1/' || true)
for page in ebbctl.1.gz ebbctl-group-create.1.gz ebbctl-completion.1.gz; do
  check "ebb-controller.rpm: /usr/share/man/man1/$page" grep -qx "/usr/share/man/man1/$page" <<<"$rpm_man"
done
for p in ebb-agent ebb-controller; do
  f=$(rpmfile $p 1)
  expect_eq "$p.rpm: version and release" "${version} 1" "$(rpm -qp --qf '%{VERSION} %{RELEASE}' "$f" 2>/dev/null)"
  conf=${p#ebb-}.toml
  expect_eq "$p.rpm: /etc/ebb/$conf is %config(noreplace)" "cn /etc/ebb/$conf" \
    "$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$f" 2>/dev/null | grep "/etc/ebb/$conf")"
  scripts=$(rpm -qp --scripts "$f" 2>/dev/null)
  check "$p.rpm: %pre creates the $p user" grep -q "useradd --system --gid $p" <<<"$scripts"
  check "$p.rpm: %preun disables the unit on erase" grep -q "disable --now $p.service" <<<"$scripts"
  check "$p.rpm: %postun restarts the unit after an upgrade" grep -q "try-restart $p.service" <<<"$scripts"
  for s in PREIN POSTIN PREUN POSTUN; do
    body=$(rpm -qp --qf "%{$s}" "$f" 2>/dev/null)
    check "$p.rpm: the $s scriptlet is sh and parses" sh -n -c "$body"
  done
  check "$p.rpm: requires shadow-utils (useradd)" grep -qx shadow-utils <<<"$(rpm -qp --requires "$f" 2>/dev/null)"
done
check "ebb-controller.rpm: %post makes /var/lib/ebb for ebb-controller" \
  grep -q "install -d -m 0711 -o ebb-controller -g ebb-controller /var/lib/ebb" \
  <<<"$(rpm -qp --scripts "$(rpmfile ebb-controller 1)" 2>/dev/null)"
check "ebb-controller.rpm: %post makes /etc/ebb/providers, root's" \
  grep -q "install -d -m 0755 /etc/ebb/providers" \
  <<<"$(rpm -qp --scripts "$(rpmfile ebb-controller 1)" 2>/dev/null)"

step "rpm: install both .rpm files into a scratch root (rpm -i --root)"
# A root with nothing in it: no shell for the scriptlets (whose text is
# checked above) and no glibc package to satisfy the dependencies, hence
# --noscripts --nodeps. What it shows is what rpm itself puts where, with
# which owner and mode, and that the binaries it unpacks run.
rpmroot="$work/rpmroot"
mkdir -p "$rpmroot"
check "rpm --initdb --root" rpm --root "$rpmroot" --initdb
check "rpm -i --root ebb-controller ebb-agent" rpm -i --root "$rpmroot" --nodeps --noscripts \
  "$(rpmfile ebb-controller 1)" "$(rpmfile ebb-agent 1)"
expect_eq "rpm -q --root: both installed at ${version}-1" \
  "ebb-agent-${version}-1.${rpm_arch} ebb-controller-${version}-1.${rpm_arch}" \
  "$(rpm -q --root "$rpmroot" ebb-agent ebb-controller 2>&1 | sort | xargs)"
check "rpm -V --root: every file as the package says (content, owner, mode)" \
  rpm -V --root "$rpmroot" --nodeps ebb-agent ebb-controller
for bin in ebb-agent ebb-controller ebbctl; do
  expect_eq "rpm root: /usr/bin/$bin is root's, mode 0755" root:root:755 \
    "$(stat -c %U:%G:%a "$rpmroot/usr/bin/$bin" 2>&1)"
  check "rpm root: $bin --version names the workspace version" \
    grep -q "$version" <<<"$("$rpmroot/usr/bin/$bin" --version 2>&1)"
  check "rpm root: $bin --help runs" "$rpmroot/usr/bin/$bin" --help
done
for f in /etc/ebb/agent.toml /etc/ebb/controller.toml /usr/lib/systemd/system/ebb-agent.service \
  /usr/lib/systemd/system/ebb-controller.service /usr/share/bash-completion/completions/ebbctl \
  /usr/share/zsh/site-functions/_ebbctl /usr/share/fish/vendor_completions.d/ebbctl.fish \
  /usr/share/man/man1/ebbctl.1.gz; do
  expect_eq "rpm root: $f is root's, mode 0644" root:root:644 "$(stat -c %U:%G:%a "$rpmroot$f" 2>&1)"
done
check "rpm root: the bash completion loads (complete -p ebbctl)" \
  bash -c "source '$rpmroot/usr/share/bash-completion/completions/ebbctl' && complete -p ebbctl"
check "rpm -e --root ebb-agent ebb-controller" rpm -e --root "$rpmroot" --nodeps --noscripts ebb-agent ebb-controller
check "rpm root: the binaries are gone after rpm -e" test ! -e "$rpmroot/usr/bin/ebbctl"

# --- install -----------------------------------------------------------------
step "install: dpkg -i both .deb files (revision 1)"
check "dpkg -i ebb-controller ebb-agent" dpkg -i "$(deb ebb-controller 1)" "$(deb ebb-agent 1)"
for p in ebb-agent ebb-controller; do
  expect_eq "$p is installed at ${version}-1" "install ok installed ${version}-1" \
    "$(dpkg-query -W -f='${Status} ${Version}' $p 2>&1)"
done
for bin in ebb-agent ebb-controller ebbctl; do
  check "/usr/bin/$bin is root's, mode 0755" test "$(stat -c %U:%a /usr/bin/$bin)" = root:755
done
check "ebb-agent --version names the workspace version" grep -q "$version" <<<"$(/usr/bin/ebb-agent --version)"
for f in /usr/share/bash-completion/completions/ebbctl /usr/share/zsh/vendor-completions/_ebbctl \
  /usr/share/fish/vendor_completions.d/ebbctl.fish /usr/share/man/man1/ebbctl.1.gz \
  /usr/share/man/man1/ebbctl-group-create.1.gz; do
  expect_eq "$f is root's, mode 0644" root:644 "$(stat -c %U:%a "$f" 2>&1)"
done
check "the installed bash completion loads (complete -p ebbctl)" \
  bash -c 'source /usr/share/bash-completion/completions/ebbctl && complete -p ebbctl'
expect_eq "the installed bash completion completes ebbctl notif<TAB>" notification \
  "$(bash -c 'source /usr/share/bash-completion/completions/ebbctl; COMP_WORDS=(ebbctl notif); COMP_CWORD=1;
    _ebbctl ebbctl notif ebbctl; echo "${COMPREPLY[*]}"' 2>&1)"
# man(1) reads the installed page; MANWIDTH and a dumb pager keep it plain.
man_text=$(MANPAGER=cat MANWIDTH=100 man ebbctl 2>&1 || true)
check "man ebbctl renders the installed page" grep -q "Administer an ebb controller" <<<"$man_text"
man_text=$(MANPAGER=cat MANWIDTH=100 man ebbctl-group-create 2>&1 || true)
check "man ebbctl-group-create shows its examples" grep -q "ebbctl group create web" <<<"$man_text"
check "ebb-controller --version names the workspace version" grep -q "$version" <<<"$(/usr/bin/ebb-controller --version)"

for u in ebb-agent ebb-controller; do
  entry=$(getent passwd $u || true)
  check "user $u exists" test -n "$entry"
  IFS=: read -r _ _ uid gid _ _ shell <<<"$entry"
  check "user $u is a system user (uid $uid)" test "${uid:-99999}" -lt 1000
  expect_eq "user $u cannot log in" /usr/sbin/nologin "$shell"
  expect_eq "user $u has its own group" "$u" "$(getent group "$gid" | cut -d: -f1)"
  expect_eq "user $u is in no other group" "$u" "$(id -Gn $u)"
done
expect_eq "ebb-controller's home is /var/lib/ebb" /var/lib/ebb "$(getent passwd ebb-controller | cut -d: -f6)"

expect_eq "/var/lib/ebb: ebb-controller's, 0711" "ebb-controller:ebb-controller 711" "$(stat -c '%U:%G %a' /var/lib/ebb 2>&1)"
expect_eq "/etc/ebb/tls: ebb-agent's, 0750 (it renews its certificates there)" "ebb-agent:ebb-agent 750" "$(stat -c '%U:%G %a' /etc/ebb/tls 2>&1)"
expect_eq "/etc/ebb/providers: root's, 0755 (provider.exec_programs' default)" "root:root 755" "$(stat -c '%U:%G %a' /etc/ebb/providers 2>&1)"
for p in ebb-agent ebb-controller; do
  conf=/etc/ebb/${p#ebb-}.toml
  expect_eq "$conf: root's, 0644" "root:root 644" "$(stat -c '%U:%G %a' "$conf" 2>&1)"
  check "$conf is a conffile of $p (dpkg-query)" grep -q "^ $conf [0-9a-f]\{32\}$" \
    <<<"$(dpkg-query -W -f='${Conffiles}\n' $p)"
  check "$conf is the packaged default" cmp "$conf" "packaging/${p#ebb-}/${p#ebb-}.toml"
done

step "units: installed, verified, hardened"
for p in ebb-agent ebb-controller; do
  unit=/usr/lib/systemd/system/$p.service
  check "$unit is installed by $p" grep -qx "$unit" <<<"$(dpkg -L $p)"
  # verify prints nothing for a clean unit; a warning (an unknown key, a
  # key in the wrong section) fails the check as well as an error does.
  out=$(systemd-analyze verify "$unit" 2>&1) && status=0 || status=$?
  if [ "$status" = 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify $p.service"; else fail "systemd-analyze verify $p.service (exit $status)" "$out"; fi
  for line in "User=$p" "Group=$p" Restart=on-failure RestartSec=5s RestartPreventExitStatus=64 \
    NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes RemoveIPC=yes \
    SystemCallFilter=@system-service SystemCallErrorNumber=EPERM "WantedBy=multi-user.target"; do
    check "$p.service: $line" grep -qx "$line" "$unit"
  done
  check "$p.service: TasksMax= set" grep -q '^TasksMax=[0-9]' "$unit"
  # The exposure systemd computes from the unit's sandboxing (0 best, 10 worst).
  exposure=$(systemd-analyze security --offline=yes "$unit" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  echo "     systemd-analyze security $p.service: exposure ${exposure:-unknown}"
  if [ "$p" = ebb-agent ]; then
    check "ebb-agent.service: exposure ${exposure:-unknown} <= 2.0" awk -v e="${exposure:-99}" 'BEGIN { exit !(e <= 2.0) }'
  fi
done
check "ebb-controller.service: no ReadWritePaths= (only the state dir is writable)" \
  bash -c "! grep -q '^ReadWritePaths=' /usr/lib/systemd/system/ebb-controller.service"
check "ebb-agent.service: ReadWritePaths=/etc/ebb/tls alone (it renews its certificates)" \
  test "$(grep '^ReadWritePaths=' /usr/lib/systemd/system/ebb-agent.service)" = "ReadWritePaths=/etc/ebb/tls"
check "ebb-controller.service: StateDirectory=ebb" grep -qx StateDirectory=ebb /usr/lib/systemd/system/ebb-controller.service
check "ebb-controller.service runs the packaged config" grep -qx \
  "ExecStart=/usr/bin/ebb-controller serve --config /etc/ebb/controller.toml" /usr/lib/systemd/system/ebb-controller.service
check "ebb-agent.service runs the packaged config" grep -qx \
  "ExecStart=/usr/bin/ebb-agent --config /etc/ebb/agent.toml" /usr/lib/systemd/system/ebb-agent.service
for line in CapabilityBoundingSet= AmbientCapabilities= ProtectProc=invisible PrivateUsers=yes \
  MemoryDenyWriteExecute=yes MemoryMax=256M; do
  check "ebb-agent.service: $line" grep -qx "$line" /usr/lib/systemd/system/ebb-agent.service
done
caps="CAP_SETUID CAP_SETGID CAP_CHOWN CAP_KILL CAP_DAC_OVERRIDE"
for key in CapabilityBoundingSet AmbientCapabilities; do
  check "ebb-controller.service: $key=$caps (the process provider's isolation)" \
    grep -qx "$key=$caps" /usr/lib/systemd/system/ebb-controller.service
done
check "ebb-controller.service: KillMode=process (a restart spares the instances)" \
  grep -qx KillMode=process /usr/lib/systemd/system/ebb-controller.service
for key in PrivateNetwork ProcSubset StateDirectory; do
  check "ebb-agent.service: no $key= (the agent reads the host's /proc and network)" \
    bash -c "! grep -q '^$key=' /usr/lib/systemd/system/ebb-agent.service"
done
check "ebb-controller.service is enabled on install" test -L /etc/systemd/system/multi-user.target.wants/ebb-controller.service
check "ebb-agent.service waits for its certificates (not enabled on install)" \
  test ! -e /etc/systemd/system/multi-user.target.wants/ebb-agent.service

# --- run the controller by hand ----------------------------------------------
# start LOG USER WRITABLE CAPS COMMAND...: starts COMMAND in the background
# as its unit would run it: as USER, with only the capabilities CAPS (a
# setpriv list such as "+setuid,+kill", or "" for none) as ambient ones, no
# new privileges, a read-only system but for WRITABLE, a private /tmp, no
# /home and /root.
# Sets started_pid, which is COMMAND's own pid (each step execs the next).
start() {
  local log=$1
  shift
  (exec unshare --mount --propagation private -- bash -c '
    set -e
    user=$1 writable=$2 caps=$3
    shift 3
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    for d in /home /root; do [ -d "$d" ] && mount -t tmpfs -o mode=0755 tmpfs "$d"; done
    [ -z "$writable" ] || mount --bind "$writable" "$writable"
    awk "{ print \$5 }" /proc/self/mountinfo | sort -u | while read -r m; do
      case "$m" in /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /tmp | /home | /root) continue ;; esac
      [ "$m" = "$writable" ] && continue
      mount -o remount,bind,ro "$m"
    done
    cd "${writable:-/}"
    if [ -n "$caps" ]; then
      set -- --bounding-set="-all,$caps" --inh-caps="-all,$caps" --ambient-caps="$caps" -- "$@"
    else
      set -- --bounding-set=-all --inh-caps=-all -- "$@"
    fi
    exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin EBB_LOG=info \
      setpriv --reuid="$user" --regid="$user" --init-groups --no-new-privs "$@"
  ' start "$@") >"$log" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
}

# Agent certificates of 60 s (renewed at 40 s), so that the renewals of the
# joined host and of a launched instance are seen below.
printf '\n[tls]\nagent_cert_lifetime_secs = 60\n' >>/etc/ebb/controller.toml

step "the controller, started by hand as ebb-controller with /etc/ebb/controller.toml"
# The unit's capabilities, in setpriv's spelling.
CONTROLLER_CAPS=+setuid,+setgid,+chown,+kill,+dac_override
start "$work/controller.log" ebb-controller /var/lib/ebb "$CONTROLLER_CAPS" \
  /usr/bin/ebb-controller serve --config /etc/ebb/controller.toml
controller_pid=$started_pid
metrics() { curl -fsS --max-time 2 "http://$HTTP/metrics"; }
if eventually 60 curl -fsS --max-time 2 "http://$HTTP/healthz"; then
  ok "the controller serves /healthz on $HTTP"
else
  fail "the controller serves /healthz on $HTTP" "$(cat "$work/controller.log")"
fi
check "it wrote /var/lib/ebb/endpoints.toml for ebbctl" test -f /var/lib/ebb/endpoints.toml
for f in ca server admin; do
  expect_eq "/var/lib/ebb/pki/$f.key: ebb-controller's, 0600" "ebb-controller:ebb-controller 600" \
    "$(stat -c '%U:%G %a' /var/lib/ebb/pki/$f.key 2>&1)"
done

step "offline: ebbctl cert issue still makes an agent certificate"
check "ebbctl --data-dir /var/lib/ebb cert issue --id offline-host" \
  ebbctl --data-dir /var/lib/ebb cert issue --id offline-host --days 30 --out-dir "$work/cert"
expect_eq "its key is 0600" 600 "$(stat -c %a "$work/cert/agent.key" 2>&1)"

step "the host joins with a token (docs/install.md): ebb-agent join"
ctl() { ebbctl --data-dir /var/lib/ebb "$@"; }
check "ebbctl group create hosts" ctl group create hosts --min 0 --max 2
check "ebbctl config create by-hand --group hosts" ctl config create by-hand --group hosts
check "ebbctl group enable hosts" ctl group enable hosts
created=$(ctl token create --group hosts --ttl 10m 2>&1) || true
join_line=$(grep -o 'ebb-agent join .*' <<<"$created" | head -1)
token=$(sed -n 's/.*--token \([^ ]*\).*/\1/p' <<<"$join_line")
ca_hash=$(sed -n 's/.*--ca-hash \(sha256:[0-9a-f]*\).*/\1/p' <<<"$join_line")
check "ebbctl token create printed a token and the CA's hash" test -n "$token" -a -n "$ca_hash"
expect_eq "the hash is ebbctl cert ca-hash's" "$(ctl cert ca-hash 2>&1)" "$ca_hash"
# As root, as install.md says; the key is then root's until the package's
# upgrade below hands it to ebb-agent (as it does any key put in place by
# root before the package was installed).
check "ebb-agent join --controller $GRPC --token … --ca-hash … --no-run" \
  ebb-agent --config /etc/ebb/agent.toml join --controller "$GRPC" --token "$token" --ca-hash "$ca_hash" --no-run
INSTANCE=$(ctl instance list --group hosts | awk 'NR > 1 { print $1; exit }')
check "the host is an Attached instance of hosts ($INSTANCE)" \
  bash -c "ebbctl --data-dir /var/lib/ebb instance list --group hosts | grep -q '^$INSTANCE .*Attached'"
check "join wrote controller = \"$GRPC\" into agent.toml" grep -qx "controller = \"$GRPC\"" /etc/ebb/agent.toml
expect_eq "/etc/ebb/tls/agent.key: 0600" 600 "$(stat -c %a /etc/ebb/tls/agent.key 2>&1)"
check "the used token joins no second host" \
  bash -c "! ebb-agent --config $work/second.toml join --controller $GRPC --token $token --ca-hash $ca_hash --no-run"
joined_cert=$(sha256sum /etc/ebb/tls/agent.crt | cut -d' ' -f1)

# --- upgrade -----------------------------------------------------------------
step "upgrade to revision 2 with edited configs"
printf '\n%s\n[reconnect]\nmax_backoff_ms = 5000\n' "$EDIT_MARK" >>/etc/ebb/agent.toml
printf '\n%s\n' "$EDIT_MARK" >>/etc/ebb/controller.toml
check "dpkg -i revision 2 (no prompt: stdin is closed)" dpkg -i "$(deb ebb-controller 2)" "$(deb ebb-agent 2)" </dev/null
for p in ebb-agent ebb-controller; do
  conf=/etc/ebb/${p#ebb-}.toml
  expect_eq "$p is installed at ${version}-2" "install ok installed ${version}-2" \
    "$(dpkg-query -W -f='${Status} ${Version}' $p 2>&1)"
  check "$conf kept its edit" grep -qxF "$EDIT_MARK" "$conf"
  check "no $conf.dpkg-* beside it" bash -c "! ls $conf.dpkg-* 2>/dev/null"
done
expect_eq "/etc/ebb/tls/agent.key: ebb-agent's, 0600 (postinst)" "ebb-agent:ebb-agent 600" \
  "$(stat -c '%U:%G %a' /etc/ebb/tls/agent.key 2>&1)"
expect_eq "/var/lib/ebb: still ebb-controller's, 0711" "ebb-controller:ebb-controller 711" "$(stat -c '%U:%G %a' /var/lib/ebb 2>&1)"

# --- run the agent by hand ---------------------------------------------------
step "the agent, started by hand as ebb-agent with /etc/ebb/agent.toml"
start "$work/agent.log" ebb-agent /etc/ebb/tls "" /usr/bin/ebb-agent --config /etc/ebb/agent.toml
agent_pid=$started_pid
# The metrics are read whole first: grep -q stops reading early, and curl
# (under pipefail) then fails the check.
connected() { local m; m=$(metrics) && grep -qx "ebb_agents_connected 1" <<<"$m"; }
reports_cpu() { local m; m=$(metrics) && grep -q "^ebb_instance_cpu_utilization{instance_id=\"$INSTANCE\",group=\"hosts\"} [0-9]" <<<"$m"; }
if eventually 60 connected; then
  ok "/metrics: ebb_agents_connected 1"
else
  fail "/metrics: ebb_agents_connected 1" "$(metrics 2>&1 | grep ebb_agents || true)"$'\n'"agent log:"$'\n'"$(cat "$work/agent.log")"
fi
# A sample with a CPU figure means the agent read the host's /proc.
if eventually 30 reports_cpu; then
  ok "/metrics: $INSTANCE reports its CPU (the agent reads the host's /proc)"
else
  fail "/metrics: $INSTANCE reports its CPU" "$(metrics 2>&1 | grep ebb_instance || true)"$'\n'"agent log:"$'\n'"$(cat "$work/agent.log")"
fi
check "the agent logged its connection" grep -q "connected to the controller" "$work/agent.log"
in_service() { ebbctl --data-dir /var/lib/ebb instance list --group hosts | grep "$INSTANCE" | grep -q InService; }
if eventually 30 in_service; then
  ok "ebbctl instance list: $INSTANCE is InService"
else
  fail "ebbctl instance list: $INSTANCE is InService" "$(ebbctl --data-dir /var/lib/ebb instance list --group hosts 2>&1)"
fi
# Its certificate lives 60 s: at 40 s the agent renews it over its stream,
# writing into /etc/ebb/tls (the unit's one writable path), and stays.
renewed() { local m; m=$(metrics) && grep -q '^ebb_cert_renewals_total [1-9]' <<<"$m" && grep -q "renewed the certificate" "$work/agent.log"; }
if eventually 120 renewed; then
  ok "the agent renewed its certificate over its stream (ebb_cert_renewals_total, its log)"
else
  fail "the agent renewed its certificate over its stream" "$(metrics 2>&1 | grep -i renew || true)"$'\n'"agent log:"$'\n'"$(tail -20 "$work/agent.log")"
fi
check "/etc/ebb/tls/agent.crt is a new certificate" \
  test "$(sha256sum /etc/ebb/tls/agent.crt | cut -d' ' -f1)" != "$joined_cert"
expect_eq "the renewed agent.key: ebb-agent's, 0600" "ebb-agent:ebb-agent 600" "$(stat -c '%U:%G %a' /etc/ebb/tls/agent.key 2>&1)"
check "the agent is still connected after renewing" connected
check "the agent kept its one stream (one 'connected to the controller' in its log)" \
  test "$(grep -c 'connected to the controller' "$work/agent.log")" = 1
expect_eq "the agent runs as ebb-agent" ebb-agent "$(stat -c %U /proc/"$agent_pid" 2>&1)"
expect_eq "the controller runs as ebb-controller" ebb-controller "$(stat -c %U /proc/"$controller_pid" 2>&1)"

step "a launched instance: its own uid, and it outlives a controller restart (KillMode=process)"
ctl() { ebbctl --data-dir /var/lib/ebb "$@"; }
check "ebbctl group create launched" ctl group create launched --min 1 --max 1
check "ebbctl config create v1 --group launched -- sleep infinity" \
  ctl config create v1 --group launched -- sleep infinity
check "ebbctl group enable launched" ctl group enable launched
launched_id() { ctl instance list --group launched | awk '/InService/ { print $1; exit }'; }
has_launched() { test -n "$(launched_id)"; }
if eventually 60 has_launched; then
  ok "the process provider launched an instance, InService"
else
  fail "the process provider launched an instance, InService" "$(ctl instance list --group launched 2>&1)"$'\n'"$(tail -20 "$work/controller.log")"
fi
launched=$(launched_id)
# The agent leads the instance's process group; its record names its pid.
launched_pid=$(sed -n 's/.*"pid": \([0-9]*\).*/\1/p' "/var/lib/ebb/instances/$launched/instance.json" 2>/dev/null | head -1)
launched_uid=$(stat -c %u "/proc/${launched_pid:-0}" 2>/dev/null || echo none)
check "the instance's agent (pid ${launched_pid:-none}) runs as its own uid ($launched_uid), not as ebb-controller" \
  test "$launched_uid" -ge 200000 -a "$launched_uid" -le 200999
check "its host dir is its uid's, 0700" test "$(stat -c '%u %a' "/var/lib/ebb/instances/$launched/host" 2>&1)" = "$launched_uid 700"
check "ebb-controller's pki/ is 0700" test "$(stat -c %a /var/lib/ebb/pki)" = 700
check "the instance's uid cannot read pki/ca.key" \
  bash -c "! setpriv --reuid=$launched_uid --regid=$launched_uid --clear-groups cat /var/lib/ebb/pki/ca.key >/dev/null 2>&1"
# systemd's stop with KillMode=process: SIGTERM to the main process only.
kill -TERM "$controller_pid" 2>/dev/null || true
if wait "$controller_pid"; then ok "the controller stopped cleanly on SIGTERM"; else fail "the controller stopped cleanly on SIGTERM (exit $?)" "$(tail -20 "$work/controller.log")"; fi
check "the instance's agent (pid $launched_pid) still runs with the controller stopped" kill -0 "$launched_pid"
start "$work/controller-2.log" ebb-controller /var/lib/ebb "$CONTROLLER_CAPS" \
  /usr/bin/ebb-controller serve --config /etc/ebb/controller.toml
controller_pid=$started_pid
readopted() { ctl instance list --group launched | grep "$launched" | grep -q InService && grep "agent connected" "$work/controller-2.log" | grep -q "$launched"; }
if eventually 60 readopted; then
  ok "the restarted controller re-adopted $launched: InService, its agent reconnected"
else
  fail "the restarted controller re-adopted $launched" "$(ctl instance list --group launched 2>&1)"$'\n'"$(tail -20 "$work/controller-2.log")"
fi
check "the same agent process (pid $launched_pid) runs: nothing was relaunched" kill -0 "$launched_pid"
expect_eq "still one instance in the group" 1 "$(ctl instance list --group launched | grep -c InService)"
check "ebbctl group delete launched --force (releases the instance)" ctl group delete launched --force
if eventually 30 bash -c "! kill -0 $launched_pid 2>/dev/null"; then ok "the release stopped the instance's agent"; else fail "the release stopped the instance's agent"; fi

step "stop both (SIGTERM)"
for name in agent controller; do
  pid_var=${name}_pid
  pid=${!pid_var}
  kill -TERM "$pid" 2>/dev/null || true
  if wait "$pid"; then ok "the $name stopped cleanly on SIGTERM"; else fail "the $name stopped cleanly on SIGTERM (exit $?)" "$(tail -20 "$work/$name.log")"; fi
done
pids=()
check "the controller's logs have no ERROR" bash -c "! grep -w ERROR '$work/controller.log' '$work/controller-2.log'"

# --- remove and purge --------------------------------------------------------
step "remove: binaries go, config and state stay"
check "dpkg -r ebb-agent ebb-controller" dpkg -r ebb-agent ebb-controller
for p in ebb-agent ebb-controller; do
  expect_eq "$p: only its config files remain" "deinstall ok config-files" "$(dpkg-query -W -f='${Status}' $p 2>&1)"
done
for f in /usr/bin/ebb-agent /usr/bin/ebb-controller /usr/bin/ebbctl /usr/lib/systemd/system/ebb-agent.service \
  /usr/lib/systemd/system/ebb-controller.service; do
  check "$f is gone" test ! -e "$f"
done
for f in /etc/ebb/agent.toml /etc/ebb/controller.toml /etc/ebb/tls/agent.key /var/lib/ebb/pki/ca.key /var/lib/ebb/ebb.db; do
  check "$f stays" test -e "$f"
done
check "the edit in agent.toml stays" grep -qxF "$EDIT_MARK" /etc/ebb/agent.toml

step "purge: config and state go"
check "dpkg -P ebb-agent ebb-controller" dpkg -P ebb-agent ebb-controller
for p in ebb-agent ebb-controller; do
  check "$p is not installed" bash -c "! dpkg-query -W -f='\${db:Status-Status}' $p 2>/dev/null | grep -qv '^not-installed$'"
done
for f in /etc/ebb /var/lib/ebb; do
  check "$f is gone" test ! -e "$f"
done
check "no unit symlink remains" bash -c "! ls /etc/systemd/system/*/ebb-*.service 2>/dev/null"
for u in ebb-agent ebb-controller; do
  check "user $u stays (Debian keeps system users)" getent passwd $u
done

finished=1
total=$((passed + failed))
elapsed=$(($(date +%s) - started))
echo
if [ "$failed" = 0 ]; then
  echo "packaging: all $total checks passed in $elapsed s"
else
  echo "packaging: $failed of $total checks FAILED (in $elapsed s)"
  exit 1
fi
