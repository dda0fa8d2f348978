# ebb-controller %postun ($1: 0 erase, 1 upgrade). An erase keeps
# controller.toml (as .rpmsave if edited), /var/lib/ebb and the user.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart ebb-controller.service >/dev/null 2>&1 || :
    fi
fi
exit 0
