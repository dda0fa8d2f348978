# ebb-controller %preun ($1: 0 erase, 1 upgrade).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now ebb-controller.service >/dev/null 2>&1 || :
fi
exit 0
