# ebb-agent %post ($1: 1 install, 2 upgrade).
# The agent's certificates: it renews them itself (new files beside the
# old, then renames), so the folder is its own; nobody else may list it.
install -d -m 0750 -o ebb-agent -g ebb-agent /etc/ebb/tls
# The hook scripts this host allows ([hooks] in agent.toml): root's alone.
install -d -m 0755 -o root -g root /etc/ebb/hooks.d
# A key put in place before the package (so before its user existed) is
# root's: give it to the agent, readable by the agent alone.
key=/etc/ebb/tls/agent.key
if [ -f "$key" ] && [ "$(stat -c %U:%G "$key")" = root:root ]; then
    chown ebb-agent:ebb-agent "$key"
    chmod 0600 "$key"
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    # The distribution's presets decide whether it is enabled; it is not
    # started: it needs its certificates first (docs/install.md).
    if [ "$1" -eq 1 ]; then
        systemctl --no-reload preset ebb-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
