#!/usr/bin/env -S sh -eu \c (an example exec provider program for AWS EC2; NOT run by ebb's tests)
# ebb `exec` provider program: each instance is an EC2 instance.
#
#   aws.sh launch|release|list   (JSON on stdin, JSON on stdout; docs/providers.md)
#
# Needs the AWS CLI v2 and jq. The configuration's exec.env gives AWS_PROFILE /
# AWS_REGION (or the host's role does) and:
#   CONTROLLER    the controller's gRPC address as the instances reach it
#                 (DNS name:7440); its name must be on the controller's
#                 certificate (grpc.server_names).
#   AGENT_DEB_URL where cloud-init downloads the ebb-agent .deb from.
#   KEY_NAME      an EC2 key pair for SSH (optional).
# exec.params: image (AMI id), size (instance type), subnet, security_group.
#
# Bootstrap: cloud-init user data installs the agent package and writes the
# certificate ebb issued for this instance id, so the agent connects *as
# this instance*. (A join token — `ebb-agent join` — would register the
# host as a new, attached instance under an id of its own, which the
# scaling group would not recognise as the one it launched.) User data is
# readable through the instance metadata service and by IAM principals with
# ec2:DescribeInstanceAttribute: require IMDSv2 (below) and restrict that
# permission. The key is this instance's alone, and short-lived (the agent
# renews its certificate).
set -eu

verb=${1:-}
input=$(cat)
ctl_tag() { printf '%s' "$input" | jq -r '.tag["ebb:controller"]'; }

instances_of() { # $1: instance id -> EC2 ids not terminated
  aws ec2 describe-instances \
    --filters "Name=tag:ebb:instance,Values=$1" \
              "Name=instance-state-name,Values=pending,running,stopping,stopped" \
    --query 'Reservations[].Instances[].InstanceId' --output text
}

case "$verb" in
launch)
  id=$(printf '%s' "$input" | jq -r .instance_id)
  p() { printf '%s' "$input" | jq -r --arg k "$1" '.configuration.params[$k] // empty'; }
  toml=$(printf '%s' "$input" | jq -r .agent.agent_toml \
    | sed "s|^controller = .*|controller = \"$CONTROLLER\"|")
  user_data=$(printf '%s' "$input" | jq -r --arg toml "$toml" --arg deb "$AGENT_DEB_URL" '
    "#cloud-config\n" + ({
      write_files: [
        {path: "/etc/ebb/agent.toml", permissions: "0644", content: $toml},
        {path: "/etc/ebb/ca.crt", permissions: "0600", content: .agent.ca_pem},
        {path: "/etc/ebb/agent.crt", permissions: "0600", content: .agent.cert_pem},
        {path: "/etc/ebb/agent.key", permissions: "0600", content: .agent.key_pem}
      ],
      runcmd: [
        ["sh", "-c", ("curl -fsSL -o /tmp/ebb-agent.deb " + $deb + " && apt-get install -y /tmp/ebb-agent.deb")],
        ["systemctl", "enable", "--now", "ebb-agent"]
      ]
    } | tojson)')
  tags=$(printf '%s' "$input" | jq -r '[.tag | to_entries[] | "{Key=\(.key),Value=\(.value)}"] | join(",")')
  # --client-token makes run-instances idempotent by instance id: a retry
  # after a lost answer returns the same instance.
  out=$(aws ec2 run-instances \
    --client-token "$id" \
    --image-id "$(p image)" --instance-type "$(p size)" \
    --subnet-id "$(p subnet)" --security-group-ids "$(p security_group)" \
    ${KEY_NAME:+--key-name "$KEY_NAME"} \
    --metadata-options HttpTokens=required \
    --user-data "$user_data" \
    --tag-specifications "ResourceType=instance,Tags=[$tags,{Key=Name,Value=$id}]" \
    --count 1)
  printf '%s' "$out" | jq -c '.Instances[0] | {provider_id: .InstanceId, address: .PrivateIpAddress}'
  ;;
release)
  id=$(printf '%s' "$input" | jq -r .instance_id)
  ids=$(instances_of "$id")
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    aws ec2 terminate-instances --instance-ids $ids >/dev/null
  fi
  echo '{}'
  ;;
list)
  aws ec2 describe-instances \
    --filters "Name=tag:ebb:controller,Values=$(ctl_tag)" \
              "Name=instance-state-name,Values=pending,running,stopping,stopped" \
    --output json | jq -c '{instances: [.Reservations[].Instances[] | {
        instance_id: ((.Tags // []) | map(select(.Key == "ebb:instance")) | .[0].Value),
        provider_id: .InstanceId,
        address: .PrivateIpAddress,
        alive: (.State.Name == "pending" or .State.Name == "running")
      } | select(.instance_id != null)]}'
  ;;
*)
  echo "usage: aws.sh launch|release|list (JSON on stdin)" >&2
  exit 64
  ;;
esac
