# ebb-controller %pre: its service user, before its files are installed.
set -e
getent group ebb-controller >/dev/null || groupadd --system ebb-controller
getent passwd ebb-controller >/dev/null ||
    useradd --system --gid ebb-controller --no-create-home --home-dir /var/lib/ebb \
        --shell /usr/sbin/nologin --comment "ebb controller" ebb-controller
exit 0
