#!/usr/bin/env python3
"""An ebb `exec` provider program: each instance is a local network-namespace
"host" on a bridge, running the real ebb-agent and the configuration's
workload. The exec provider's end-to-end tests and conformance suite run it.

    netns.py launch|release|list   (JSON on stdin, JSON on stdout; see docs/providers.md)

Needs root, python3, `ip` (iproute2) and `nsenter` (util-linux). Settings, from
the environment (the configuration's `exec.env`):
  NETNS_BRIDGE  the bridge to attach to; it must exist and carry an IPv4
                address, which becomes each instance's gateway and the
                address its agent dials (e.g. the controller's own bridge
                with provider.network = "namespace").
  NETNS_STATE   where each instance's dir lives (default /var/lib/ebb-netns).
  NETNS_AGENT   the ebb-agent to run (default: ebb-agent on PATH).

Each instance gets a dir NETNS_STATE/<instance id> holding its tag, address,
certificates, agent.toml, logs and pids; a namespace `x<bridge>.<id>` (not
`<bridge>.<id>`, which the controller's own namespaced instances use); and
the highest free address of the bridge's subnet (the controller hands out
the lowest). `list` reports every dir whose tag matches.
"""

import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

STATE = os.environ.get("NETNS_STATE", "/var/lib/ebb-netns")
BRIDGE = os.environ.get("NETNS_BRIDGE", "")
AGENT = os.environ.get("NETNS_AGENT") or shutil.which("ebb-agent") or "ebb-agent"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


def fail(message, code=1):
    print(f"netns.py: {message}", file=sys.stderr)
    sys.exit(code)


def ip(*args, check=True):
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        fail(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def names(instance_id):
    netns = f"x{BRIDGE}.{instance_id}"
    veth = "exv" + hashlib.sha256(netns.encode()).hexdigest()[:12]
    return netns, veth


def bridge_network():
    """The bridge's own address, as an interface (address and subnet)."""
    if not BRIDGE:
        fail("NETNS_BRIDGE is not set: name the bridge to attach instances to (exec.env)", 78)
    for line in ip("-4", "-o", "addr", "show", "dev", BRIDGE).splitlines():
        fields = line.split()
        if "inet" in fields:
            return ipaddress.ip_interface(fields[fields.index("inet") + 1])
    fail(f"bridge {BRIDGE} has no IPv4 address", 78)


def start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def running(record):
    return record is not None and start_time(record[0]) == record[1]


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def instance_id(request):
    i = request.get("instance_id", "")
    if not ID.match(i):
        fail(f"`{i}` is not an instance id", 65)
    return i


def alive(d):
    pids = read_json(os.path.join(d, "pids.json"), {})
    agent = pids.get("agent")
    workload = pids.get("workload")
    return running(agent) and (workload is None or running(workload))


def launch(request):
    iid = instance_id(request)
    d = os.path.join(STATE, iid)
    net = bridge_network()
    netns, veth = names(iid)
    os.makedirs(STATE, mode=0o700, exist_ok=True)
    # One launch at a time picks an address.
    with open(os.path.join(STATE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(d):
            fail(f"{d} exists: {iid} was launched before (release it first)")
        os.mkdir(d, 0o700)
        # The tag first: `list` finds a launch that stops half-way.
        write(os.path.join(d, "tag.json"), json.dumps(request["tag"]))
        taken = {str(net.ip)}
        for other in os.listdir(STATE):
            a = read_json(os.path.join(STATE, other, "address.json"))
            if a:
                taken.add(a)
        free = [h for h in reversed(list(net.network.hosts())) if str(h) not in taken]
        if not free:
            fail(f"no free address left on {BRIDGE} ({net.network})")
        address = str(free[0])
        write(os.path.join(d, "address.json"), json.dumps(address))

    ip("netns", "add", netns)
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    ip("link", "set", veth, "master", BRIDGE, "up")
    ip("-n", netns, "addr", "add", f"{address}/{net.network.prefixlen}", "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")
    ip("-n", netns, "link", "set", "lo", "up")
    ip("-n", netns, "route", "add", "default", "via", str(net.ip))

    agent = request["agent"]
    for name, key in (("ca.crt", "ca_pem"), ("agent.crt", "cert_pem"), ("agent.key", "key_pem")):
        write(os.path.join(d, name), agent[key])
    # The agent inside dials the controller through the bridge's address,
    # on the controller's port, and still checks the controller's name.
    port = agent["controller"].rsplit(":", 1)[-1]
    toml = re.sub(
        r'^controller = ".*"$',
        f'controller = "{net.ip}:{port}"',
        agent["agent_toml"],
        count=1,
        flags=re.M,
    )
    if "server_name" not in toml:
        host = agent["controller"].rsplit(":", 1)[0].strip("[]")
        toml = f'server_name = "{agent["server_name"] or host}"\n' + toml
    write(os.path.join(d, "agent.toml"), toml, 0o644)

    enter = ["nsenter", f"--net=/run/netns/{netns}", "--"]
    log = open(os.path.join(d, "agent.log"), "ab")
    agent_proc = subprocess.Popen(
        [*enter, AGENT, "--config", os.path.join(d, "agent.toml")],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=d,
        env={"PATH": PATH, "HOME": d, "LANG": "C.UTF-8", "EBB_LOG": "info"},
        start_new_session=True,
    )
    pids = {"agent": [agent_proc.pid, start_time(agent_proc.pid)]}
    configuration = request["configuration"]
    if configuration.get("command"):
        env = {"PATH": PATH, "HOME": d, "LANG": "C.UTF-8", **configuration.get("env", {})}
        env.update(EBB_INSTANCE_ID=iid, EBB_GROUP_ID=request["group_id"], EBB_INSTANCE_ADDRESS=address)
        wlog = open(os.path.join(d, "workload.log"), "ab")
        workload = subprocess.Popen(
            [*enter, *configuration["command"]],
            stdin=subprocess.DEVNULL, stdout=wlog, stderr=wlog, cwd=d, env=env,
            start_new_session=True,
        )
        pids["workload"] = [workload.pid, start_time(workload.pid)]
    write(os.path.join(d, "pids.json"), json.dumps(pids))
    json.dump({"provider_id": netns, "address": address}, sys.stdout)
    print()


def release(request):
    iid = instance_id(request)
    d = os.path.join(STATE, iid)
    netns, veth = names(iid)
    pids = read_json(os.path.join(d, "pids.json"), {})
    # The agent and the workload each lead a session (and group) of their own.
    groups = [p for p in (pids.get("agent"), pids.get("workload")) if running(p)]
    for p in groups:
        os.killpg(p[0], signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(running(p) for p in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in groups:
        if running(p):
            os.killpg(p[0], signal.SIGKILL)
    # Whatever else still runs inside (a half-made launch's, a straggler).
    if os.path.exists(f"/run/netns/{netns}"):
        for pid in ip("netns", "pids", netns, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
    if os.path.exists(f"/sys/class/net/{veth}"):
        ip("link", "del", veth, check=False)
    if os.path.exists(f"/run/netns/{netns}"):
        ip("netns", "del", netns)
    shutil.rmtree(d, ignore_errors=True)
    print("{}")


def list_instances(request):
    want = request.get("tag", {})
    found = []
    for iid in sorted(os.listdir(STATE)) if os.path.isdir(STATE) else []:
        d = os.path.join(STATE, iid)
        tag = read_json(os.path.join(d, "tag.json"))
        if not ID.match(iid) or not isinstance(tag, dict):
            continue
        if any(tag.get(k) != v for k, v in want.items()):
            continue
        found.append({
            "instance_id": iid,
            "provider_id": names(iid)[0],
            "address": read_json(os.path.join(d, "address.json")),
            "alive": alive(d),
        })
    json.dump({"instances": found}, sys.stdout)
    print()


def main():
    verbs = {"launch": launch, "release": release, "list": list_instances}
    if len(sys.argv) != 2 or sys.argv[1] not in verbs:
        fail("usage: netns.py launch|release|list (JSON on stdin)", 64)
    try:
        request = json.load(sys.stdin)
    except ValueError as e:
        fail(f"stdin is not JSON: {e}", 65)
    verbs[sys.argv[1]](request)


if __name__ == "__main__":
    main()
