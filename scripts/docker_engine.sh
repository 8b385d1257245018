#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`, for `make image` and the container image tests.
# When none answers: installs Debian's docker.io if there is no dockerd (scripts/apt_install.sh), starts
# the engine (systemctl where systemd runs, else dockerd in the background, its log in
# $CROSSMODAL_DOCKERD_LOG, default /tmp/crossmodal-dockerd.log) and waits for it, at most
# $CROSSMODAL_DOCKERD_WAIT seconds (default 60). Idempotent: does nothing when an engine answers.
#
#   docker_engine.sh             exit 1 with the reason and the fix when no engine can be had
#   docker_engine.sh --optional  the same message, but exit 0 (`make test`: the image tests then skip)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG="${CROSSMODAL_DOCKERD_LOG:-/tmp/crossmodal-dockerd.log}"
WAIT="${CROSSMODAL_DOCKERD_WAIT:-60}"
OPTIONAL=0
case "${1:-}" in
  --optional) OPTIONAL=1 ;;
  "") ;;
  *) echo "usage: docker_engine.sh [--optional]" >&2; exit 2 ;;
esac

fail() {
  # $1: what is wrong; $2: how to fix it.
  echo "docker_engine.sh: no Docker engine: $1" >&2
  echo "docker_engine.sh: fix: $2" >&2
  if [ "$OPTIONAL" = 1 ]; then
    echo "docker_engine.sh: the container image tests (tests/deploy/test_image_*.py) will be skipped" >&2
    exit 0
  fi
  exit 1
}

# Bounded: an engine that hangs counts as none.
answers() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }

if answers; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  elif command -v docker >/dev/null 2>&1 && docker info 2>&1 | grep -qi "permission denied"; then
    fail "an engine runs but this user may not use its socket ($(docker info 2>&1 | grep -i -m1 'permission denied'))" \
      "add the user to the docker group (sudo usermod -aG docker $(id -un)) and log in again"
  else
    fail "none runs, and starting one needs root (this user is $(id -un), without password-less sudo)" \
      "start it yourself (sudo systemctl start docker, or sudo dockerd &) and run make again"
  fi
fi

if ! command -v dockerd >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ] && [ ! -x /usr/bin/dockerd ]; then
  echo "docker_engine.sh: installing Debian's docker.io" >&2
  bash "$HERE/apt_install.sh" docker.io \
    || fail "dockerd is not installed and apt-get could not install docker.io (see above)" \
      "install a Docker engine (Debian/Ubuntu: apt-get install docker.io; elsewhere https://docs.docker.com/engine/install/)"
fi
DOCKERD="$(command -v dockerd || echo /usr/sbin/dockerd)"
command -v docker >/dev/null 2>&1 || fail "the docker command is missing although dockerd is installed" \
  "install the Docker client (Debian: apt-get install docker.io)"

running_dockerd() {
  # The pid of a dockerd that is already starting (its pid file), so that a second one is not started.
  local pidfile=/var/run/docker.pid
  [ -s "$pidfile" ] && $SUDO kill -0 "$($SUDO cat "$pidfile")" 2>/dev/null && $SUDO cat "$pidfile"
}

pid="$(running_dockerd || true)"
if [ -n "$pid" ]; then
  echo "docker_engine.sh: dockerd (pid $pid) is running; waiting for it to answer" >&2
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  echo "docker_engine.sh: starting docker.service" >&2
  $SUDO systemctl start docker.service || fail "systemctl start docker.service failed" \
    "see journalctl -u docker.service"
else
  echo "docker_engine.sh: starting $DOCKERD (log: $LOG)" >&2
  # setsid + nohup: the engine outlives make and this shell, like a system service, and a Ctrl-C in the
  # terminal does not reach it. (This shell has no job control, so setsid does not fork: $! is dockerd.)
  $SUDO setsid nohup "$DOCKERD" >"$LOG" 2>&1 </dev/null &
  pid=$!
fi

deadline=$((SECONDS + WAIT))
until answers; do
  if [ -n "$pid" ] && ! $SUDO kill -0 "$pid" 2>/dev/null && [ -z "$(running_dockerd || true)" ]; then
    tail -n 15 "$LOG" >&2 || true
    fail "dockerd exited at start (its log above, in full in $LOG)" \
      "dockerd needs root with the capabilities of a container host (cgroups, overlay or vfs storage, iptables); in a container run it --privileged"
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    tail -n 15 "$LOG" >&2 || true
    fail "dockerd did not answer docker info within ${WAIT} s (its log: $LOG)" \
      "look at the log; raise CROSSMODAL_DOCKERD_WAIT if the machine is just slow"
  fi
  sleep 0.5
done
echo "docker_engine.sh: Docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) is up" >&2
