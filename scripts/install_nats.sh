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
if ! command -v apt-get >/dev/null 2>&1; then
  fail "nats-server is not installed and apt-get was not found"
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    fail "nats-server is not installed, and this is not root and has no password-less sudo to install it"
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# The package ships a systemd unit that would start a system-wide server on 4222; crossmodal starts its
# own servers on free ports, so forbid service starts during the install (policy-rc.d exit 101).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT
# A stale package list may name versions the mirror no longer has: refresh once, then install.
$SUDO apt-get update -qq || fail "apt-get update failed"
$SUDO apt-get install -y -qq --no-install-recommends nats-server >/dev/null || fail "apt-get install nats-server failed"
found || fail "apt-get installed nats-server but no nats-server binary was found"
