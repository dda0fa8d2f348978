#!/usr/bin/env -S sh -eu \c (an example exec provider program for Docker; NOT run by ebb's tests)
# ebb `exec` provider program: each instance is a Docker container running
# the agent and the configuration's workload.
#
#   docker.sh launch|release|list   (JSON on stdin, JSON on stdout; docs/providers.md)
#
# Needs docker and jq. exec.env: DOCKER_NETWORK (a user-defined network the
# controller is reachable from), CONTROLLER (its address as containers reach
# it, e.g. 172.18.0.1:7440), STATE (where each container's agent files go,
# default /var/lib/ebb-docker). exec.params: image — an image holding
# ebb-agent (and the workload).
set -eu

verb=${1:-}
input=$(cat)
STATE=${STATE:-/var/lib/ebb-docker}

case "$verb" in
launch)
  id=$(printf '%s' "$input" | jq -r .instance_id)
  image=$(printf '%s' "$input" | jq -r '.configuration.params.image')
  dir="$STATE/$id"
  mkdir -p "$dir"
  printf '%s' "$input" | jq -r .agent.ca_pem > "$dir/ca.crt"
  printf '%s' "$input" | jq -r .agent.cert_pem > "$dir/agent.crt"
  (umask 077; printf '%s' "$input" | jq -r .agent.key_pem > "$dir/agent.key")
  printf '%s' "$input" | jq -r .agent.agent_toml \
    | sed "s|^controller = .*|controller = \"$CONTROLLER\"|" > "$dir/agent.toml"
  # The workload runs beside the agent: a tiny entrypoint starts both.
  printf '%s' "$input" | jq -r '.configuration.command | @sh' > "$dir/workload"
  cat > "$dir/entrypoint" <<'SH'
#!/bin/sh
ebb-agent --config /etc/ebb/agent.toml &
[ -s /etc/ebb/workload ] && eval "set -- $(cat /etc/ebb/workload)" && "$@" &
wait -n
SH
  chmod +x "$dir/entrypoint"
  # Labels are the tag; --name makes a second launch of one id fail, not double.
  labels=$(printf '%s' "$input" | jq -r '.tag | to_entries[] | "--label=\(.key)=\(.value)"')
  envs=$(printf '%s' "$input" | jq -r '.configuration.env | to_entries[] | "--env=\(.key)=\(.value)"')
  # shellcheck disable=SC2086
  cid=$(docker run -d --name "ebb-$id" --network "$DOCKER_NETWORK" \
    -v "$dir:/etc/ebb:ro" --entrypoint /etc/ebb/entrypoint \
    -e EBB_INSTANCE_ID="$id" $labels $envs "$image")
  addr=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$cid")
  jq -cn --arg p "$cid" --arg a "$addr" '{provider_id: $p, address: $a}'
  ;;
release)
  id=$(printf '%s' "$input" | jq -r .instance_id)
  docker rm -f "ebb-$id" >/dev/null 2>&1 || true
  rm -rf "${STATE:?}/$id"
  echo '{}'
  ;;
list)
  tag=$(printf '%s' "$input" | jq -r '.tag["ebb:controller"]')
  ids=$(docker ps -aq --filter "label=ebb:controller=$tag")
  if [ -z "$ids" ]; then echo '{"instances": []}'; exit 0; fi
  # shellcheck disable=SC2086
  docker inspect $ids | jq -c '{instances: [.[] | {
      instance_id: .Config.Labels["ebb:instance"],
      provider_id: .Id,
      address: ([.NetworkSettings.Networks[].IPAddress] | first),
      alive: .State.Running
    }]}'
  ;;
*)
  echo "usage: docker.sh launch|release|list (JSON on stdin)" >&2
  exit 64
  ;;
esac
