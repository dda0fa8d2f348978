# ebb-agent %postun ($1: 0 erase, 1 upgrade). An erase keeps agent.toml
# (as .rpmsave if edited), the certificates and the ebb-agent user.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart ebb-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
