# ebb-agent %pre: its service user, before its files are installed.
set -e
getent group ebb-agent >/dev/null || groupadd --system ebb-agent
getent passwd ebb-agent >/dev/null ||
    useradd --system --gid ebb-agent --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "ebb agent" ebb-agent
exit 0
