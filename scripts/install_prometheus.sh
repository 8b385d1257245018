#!/usr/bin/env bash
# Install Debian's `prometheus` package (prometheus + promtool) for the monitoring tests.
# Idempotent: does nothing when both binaries are already on PATH. Needs root (or sudo) and apt-get;
# without them it says so and exits 0, and the tests that need Prometheus skip with that reason.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_prometheus.sh: apt-get not found; Prometheus tests will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install_prometheus.sh: not root and no password-less sudo; Prometheus tests will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# The package's maintainer scripts would start a system-wide daemon; the tests run their own
# instance on a free port, so forbid service starts during the install (policy-rc.d exit 101).
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
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null && command -v prometheus >/dev/null
