#!/usr/bin/env bash
# Install Debian's `nats-server` package: the JetStream server of the write log, which `crossmodal up
# --replicas 2` and the tests of replicated shards start (crossmodal/logserver.py).
# Idempotent: does nothing when nats-server is already installed. Unlike Prometheus it is not optional
# (every cluster with more than one replica per shard needs it), so when it cannot be installed this
# says why and how, and exits 1.
set -euo pipefail

found() {
  # Debian puts it in /usr/sbin, which is not on every user's PATH; crossmodal.logserver looks there too.
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || [ -x /usr/bin/nats-server ]
}
fail() {
  echo "install_nats.sh: $1" >&2
  echo "install_nats.sh: install nats-server 2.9 or later yourself (Debian/Ubuntu: apt-get install nats-server;" \
    "elsewhere: https://docs.nats.io/running-a-nats-service/introduction/installation) and run make again" >&2
  exit 1
}

if found; then
  exit 0
fi
bash "$(dirname "$0")/apt_install.sh" nats-server || fail "nats-server is not installed and could not be installed"
found || fail "apt-get installed nats-server but no nats-server binary was found"
