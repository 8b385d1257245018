#!/usr/bin/env bash
# Install Debian's `prometheus` package (prometheus + promtool) for the monitoring tests.
# Idempotent: does nothing when both binaries are already on PATH. When it cannot install (no apt-get,
# not root and no sudo), it says so and exits 0, and the tests that need Prometheus skip with that reason.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if ! bash "$(dirname "$0")/apt_install.sh" prometheus; then
  echo "install_prometheus.sh: Prometheus tests will be skipped" >&2
  exit 0
fi
command -v promtool >/dev/null && command -v prometheus >/dev/null
