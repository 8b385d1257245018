#!/usr/bin/env bash
# Install Debian's `chromium` and `chromium-driver` for the search page's browser test (tests/http/test_page.py).
# Idempotent: does nothing when both are already on PATH. When it cannot install (no apt-get, not root and
# no sudo), it says so and exits 0, and the browser test skips with that reason.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if ! bash "$(dirname "$0")/apt_install.sh" chromium chromium-driver; then
  echo "install_chromium.sh: the browser test of the search page will be skipped" >&2
  exit 0
fi
command -v chromium >/dev/null && command -v chromedriver >/dev/null
