#!/usr/bin/env bash
# Install Debian packages by name for the project's tests: as root or with password-less sudo, with
# service starts forbidden during the install (a package's maintainer scripts would start a system-wide
# daemon; the tests start their own instances on free ports). Exits non-zero with a reason on stderr
# when it cannot install; the callers decide whether that is fatal.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: apt_install.sh PACKAGE..." >&2
  exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt_install.sh: apt-get not found" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "apt_install.sh: not root and no password-less sudo" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
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
$SUDO apt-get update -qq || { echo "apt_install.sh: apt-get update failed" >&2; exit 1; }
$SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null || {
  echo "apt_install.sh: apt-get install $* failed" >&2
  exit 1
}
