#!/usr/bin/env bash
# Build the service image (docker/Dockerfile) with the Docker engine: `make image` runs this.
#
#   image.sh [--base registry|local] [--image NAME] [--tag TAG] [--variant cpu|cuda] [--push] [--python PY]
#
# 1. A Docker engine: scripts/docker_engine.sh installs and starts one when none answers.
# 2. The base. registry (default): python:3.11-slim-bookworm, pulled when not present. local: a minimal
#    Debian bookworm with python3 and python3-venv, made here by mmdebstrap from Debian's packages (the
#    machine's own apt sources when it runs bookworm) and `docker import`ed as crossmodal-base:bookworm-<recipe
#    hash>; made once and reused while the recipe below is unchanged, so a build needs no registry at all.
# 3. The wheelhouse: the dependencies of pyproject.toml, pinned by constraints.txt, downloaded on this
#    machine (its pip configuration and indexes) as CPython 3.11 manylinux x86_64 wheels into
#    build/image/wheels/<variant>/; the Dockerfile installs from there only. Refreshed when the
#    requirements change.
# 4. docker build (classic builder: works with any Docker client, no buildx needed), then the size.
#
# NAME defaults to crossmodal, TAG to the version in pyproject.toml; --push pushes NAME:TAG afterwards
# (log in to the registry first). PY is the Python whose pip downloads the wheels (default: the
# project's .venv, else python3). Prints the image reference as the last line of stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE=registry
IMAGE=crossmodal
TAG=""
VARIANT=cpu
PUSH=0
PY=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --base) BASE="$2"; shift 2 ;;
    --image) IMAGE="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --variant) VARIANT="$2"; shift 2 ;;
    --push) PUSH=1; shift ;;
    --python) PY="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "image.sh: $*" >&2; exit 1; }
case "$BASE" in registry|local) ;; *) die "--base must be registry or local, got '$BASE'" ;; esac
case "$VARIANT" in cpu|cuda) ;; *) die "--variant must be cpu or cuda, got '$VARIANT'" ;; esac
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3 || true)"; fi
fi
[ -n "$PY" ] && "$PY" -m pip --version >/dev/null 2>&1 \
  || die "no Python with pip to download the wheels (run make setup, or pass --python)"
VERSION="$("$PY" -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['project']['version'])" "$ROOT/pyproject.toml")"
TAG="${TAG:-$VERSION}"
REF="$IMAGE:$TAG"
started=$SECONDS

bash "$ROOT/scripts/docker_engine.sh"

# ---- 2. the base ----------------------------------------------------------------------------------------
REGISTRY_BASE=python:3.11-slim-bookworm
SUITE=bookworm
# Everything that decides the local base's content; its hash names the image, so a change makes a new one.
BASE_PACKAGES=python3,python3-venv,usr-is-merged
BASE_DPKG_OPTS=(
  "--dpkgopt=path-exclude=/usr/share/doc/*"
  "--dpkgopt=path-include=/usr/share/doc/*/copyright"
  "--dpkgopt=path-exclude=/usr/share/man/*"
  "--dpkgopt=path-exclude=/usr/share/info/*"
  "--dpkgopt=path-exclude=/usr/share/locale/*"
)
BASE_CHANGES=(
  "--change=ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  "--change=ENV LANG=C.UTF-8"
  '--change=CMD ["/bin/bash"]'
)
BASE_RECIPE="v1 $SUITE minbase $BASE_PACKAGES merged-usr ${BASE_DPKG_OPTS[*]} ${BASE_CHANGES[*]}"

local_base() {
  # Print the tag of the local Debian base, making it first when it does not exist yet.
  local hash tag sources=() t0 base_log="$ROOT/build/image/base.log"
  hash="$(printf '%s' "$BASE_RECIPE" | sha256sum | cut -c1-12)"
  tag="crossmodal-base:$SUITE-$hash"
  if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "image.sh: base $tag (cached)" >&2
    echo "$tag"
    return
  fi
  if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "image.sh: installing mmdebstrap" >&2
    bash "$ROOT/scripts/apt_install.sh" mmdebstrap \
      || die "mmdebstrap is needed for --base local and could not be installed (apt-get install mmdebstrap), or build with --base registry"
  fi
  # The machine's own apt sources when it runs the same suite (its mirror or proxy is what works here);
  # otherwise mmdebstrap's default, deb.debian.org with the updates and security suites.
  if [ -r /etc/os-release ] && [ "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" = "$SUITE" ]; then
    if [ -s /etc/apt/sources.list.d/debian.sources ]; then
      sources=(/etc/apt/sources.list.d/debian.sources)
    elif grep -qs "^deb .* $SUITE" /etc/apt/sources.list; then
      sources=(/etc/apt/sources.list)
    fi
  fi
  mkdir -p "$ROOT/build/image"
  echo "image.sh: making base $tag with mmdebstrap ($SUITE minbase + $BASE_PACKAGES)" >&2
  t0=$SECONDS
  # Imported under a temporary name first: a stream cut short by a failure must not pass for the base.
  if ! mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr "${BASE_DPKG_OPTS[@]}" \
    "$SUITE" - "${sources[@]}" 2>"$base_log" \
    | docker import "${BASE_CHANGES[@]}" --change "LABEL io.crossmodal.base-recipe=$hash" - "$tag-partial" >/dev/null; then
    docker rmi "$tag-partial" >/dev/null 2>&1 || true
    tail -n 30 "$base_log" >&2
    die "could not make the local base (the end of mmdebstrap's log above, in full in $base_log):" \
      "mmdebstrap needs Debian's packages (apt sources reachable) and root or user namespaces"
  fi
  docker tag "$tag-partial" "$tag"
  docker rmi "$tag-partial" >/dev/null
  echo "image.sh: base $tag made in $((SECONDS - t0)) s" >&2
  echo "$tag"
}

if [ "$BASE" = local ]; then
  BASE_IMAGE="$(local_base)"
else
  BASE_IMAGE="$REGISTRY_BASE"
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    docker pull "$BASE_IMAGE" >&2 \
      || die "cannot pull $BASE_IMAGE (no registry reachable?): build from a Debian base made here with make image BASE=local"
  fi
fi

# ---- 3. the wheelhouse ----------------------------------------------------------------------------------
WHEELS="$ROOT/build/image/wheels/$VARIANT"
requirements="$("$PY" - "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$VARIANT" "$PY" <<'EOF'
import importlib.metadata, re, sys, tomllib
pyproject, constraints, variant, _ = sys.argv[1:]
deps = list(tomllib.load(open(pyproject, "rb"))["project"]["dependencies"])
# The project's build backend, so `pip install .` in the image finds it in the wheelhouse too; pinned to
# the version this machine builds the project with.
try:
    deps.append("setuptools==" + importlib.metadata.version("setuptools"))
except importlib.metadata.PackageNotFoundError:
    deps.append("setuptools>=68")
if variant == "cuda":
    ort = re.search(r"^onnxruntime==(\S+)", open(constraints).read(), re.M).group(1)
    deps.append(f"onnxruntime-gpu[cuda,cudnn]=={ort}")
print("\n".join(deps))
EOF
)"
stamp_wanted="$(printf '%s\n' "$requirements" | cat - "$ROOT/constraints.txt" | sha256sum | cut -c1-16)"
if [ "$(cat "$WHEELS/.requirements-hash" 2>/dev/null || true)" = "$stamp_wanted" ]; then
  echo "image.sh: wheelhouse $WHEELS (cached)" >&2
else
  echo "image.sh: downloading the wheels into $WHEELS" >&2
  rm -rf "$WHEELS"
  mkdir -p "$WHEELS"
  printf '%s\n' "$requirements" >"$WHEELS/.requirements.txt"
  # Every manylinux tag glibc 2.36 (bookworm) runs: pip does not widen an explicit --platform by itself.
  platforms=(--platform manylinux2014_x86_64 --platform linux_x86_64)
  for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
  # The "is ignored: it is neither a file nor a directory" lines are this machine's empty local indexes.
  "$PY" -m pip download --quiet --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
    "${platforms[@]}" -c "$ROOT/constraints.txt" -r "$WHEELS/.requirements.txt" -d "$WHEELS" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) \
    || die "pip could not download the wheels (above); the image installs from them only"
  echo "$stamp_wanted" >"$WHEELS/.requirements-hash"
fi

# ---- 4. the image ---------------------------------------------------------------------------------------
REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
echo "image.sh: building $REF ($VARIANT) from $BASE_IMAGE" >&2
t0=$SECONDS
BUILD_LOG="$ROOT/build/image/build-$VARIANT.log"
BUILD_ARGS=(
  -f "$ROOT/docker/Dockerfile"
  --build-arg "PYTHON_IMAGE=$BASE_IMAGE"
  --build-arg "VARIANT=$VARIANT"
  --build-arg "VERSION=$VERSION"
  --build-arg "REVISION=$REVISION"
)
# The build stage gets a tag of its own so that its layers (the installed dependencies) stay cached once
# the earlier images, which no tag names any more, are pruned below. The classic builder
# (DOCKER_BUILDKIT=0): a Docker client without buildx cannot use BuildKit.
if ! { DOCKER_BUILDKIT=0 docker build "${BUILD_ARGS[@]}" --target build -t "crossmodal-build:$VARIANT-$BASE" "$ROOT" \
  && DOCKER_BUILDKIT=0 docker build "${BUILD_ARGS[@]}" -t "$REF" "$ROOT"; } >"$BUILD_LOG" 2>&1; then
  tail -n 40 "$BUILD_LOG" >&2
  die "docker build failed (the end of its log above, in full in $BUILD_LOG)"
fi
# Rebuilding after every change must not fill the disk: the previous build stage and image of this
# project, now untagged, go (only those: the filters are labels the Dockerfile sets).
docker image prune --force --filter "label=io.crossmodal.stage=build" >/dev/null
docker image prune --force --filter "label=org.opencontainers.image.title=crossmodal" >/dev/null
size="$(docker image inspect -f '{{.Size}}' "$REF")"
echo "image.sh: built $REF in $((SECONDS - t0)) s: $((size / 1000000)) MB (base $BASE_IMAGE); $((SECONDS - started)) s in all" >&2

if [ "$PUSH" = 1 ]; then
  docker push "$REF" >&2 || die "docker push $REF failed (docker login to the registry first?)"
fi
echo "$REF"
