# ebb-controller %post ($1: 1 install, 2 upgrade).
install -d -m 0711 -o ebb-controller -g ebb-controller /var/lib/ebb
# Where provider.exec_programs looks by default (docs/providers.md): root's,
# so only root puts programs the controller will run there. Made once: an
# upgrade keeps the mode an operator gave it.
[ -d /etc/ebb/providers ] || install -d -m 0755 /etc/ebb/providers
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    # The distribution's presets decide whether it is enabled and started.
    if [ "$1" -eq 1 ]; then
        systemctl --no-reload preset ebb-controller.service >/dev/null 2>&1 || :
    fi
fi
exit 0
