"""The service image's recipe: the Dockerfile agrees with the chart and the project, and its helper scripts work.

These checks read the Dockerfile, .dockerignore and scripts/image.sh and need no Docker engine; the image
is built for real and run (alone, and as the whole cluster the chart describes) by test_image_build.py and
test_image_cluster.py, which `make test` runs when it can start an engine. The two scripts the image
installs, crossmodal-healthcheck (the chart's exec probe under TLS) and crossmodal-verify-bundle (the
chart's init container), also run here against real services and bundles, outside any container.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from crossmodal.bundle import Manifest
from tests.bundle.audio_bundles import with_audio_tower
from tests.certs import make_certs
from tests.cli.upcli import without_audio_tower
from tests.deploy.chart import CHART
from tests.support import ROOT, ServiceProcess

DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
IMAGE_SCRIPT = ROOT / "scripts" / "image.sh"
# The wheelhouse scripts/image.sh fills on the host, per variant; the Dockerfile installs from it only.
WHEELHOUSE = "build/image/wheels/${VARIANT}"
VERIFY_BUNDLE = ROOT / "docker" / "verify_bundle.py"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for instruction, args in _instructions():
        if instruction == "FROM":
            current = []
            stages[args.split()[-1]] = current
        current.append((instruction, args))
    return stages


def _copies(stage: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of the stage's COPY instructions from the build context."""
    out = []
    for instruction, args in stage:
        if instruction != "COPY" or "--from=" in args:
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        out.append((words[:-1], words[-1]))
    return out


def _chart_values() -> dict:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def test_the_image_is_multi_stage_and_runs_as_the_charts_non_root_user() -> None:
    stages = _stages()
    assert list(stages) == ["deps", "build", "runtime"]
    runtime = stages["runtime"]
    users = [args for instruction, args in runtime if instruction == "USER"]
    assert users == ["10001:10001"]
    context = _chart_values()["containerSecurityContext"]
    assert users[0] == f"{context['runAsUser']}:{context['runAsGroup']}"
    # Only the virtualenv and the installed project come from the build stages: no wheelhouse, pip or
    # compiler in the runtime image.
    from_stages = [args for instruction, args in runtime if instruction == "COPY" and "--from=" in args]
    assert from_stages == ["--from=deps /opt/venv /opt/venv", "--from=build /opt/crossmodal /opt/crossmodal"]
    assert stages["build"][0] == ("FROM", "deps AS build")
    for instruction, args in _instructions():
        if instruction == "FROM":
            assert ":latest" not in args


def test_cpu_and_cuda_variants_come_from_one_build_argument() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG VARIANT=cpu" in text
    assert re.search(r'\[ "\$VARIANT" = "cuda" \]', text)
    assert "onnxruntime-gpu[cuda,cudnn]==${ort_version}" in text
    assert "$PIP uninstall -y onnxruntime" in text
    constraints = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^onnxruntime==\d", constraints, re.M), "the CUDA build pins onnxruntime-gpu to this"


def test_the_chart_commands_exist_in_the_image() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    templates = "\n".join(p.read_text() for p in (CHART / "templates").glob("*"))
    commands = ("gateway", "encoder-text", "encoder-image", "encoder-audio", "index")
    for command in (f"crossmodal-{name}" for name in commands):
        assert command in scripts and command in templates
    destinations = {dest for _src, dest in _copies(_stages()["runtime"])}
    assert {"/usr/local/bin/crossmodal-healthcheck", "/usr/local/bin/crossmodal-verify-bundle"} <= destinations
    assert _chart_values()["model"]["imagePath"] in destinations
    env = next(args for instruction, args in _stages()["runtime"] if instruction == "ENV" and "BUNDLE" in args)
    assert f"CROSSMODAL_ENCODER_BUNDLE={_chart_values()['model']['imagePath']}" in env


def test_the_image_exposes_the_charts_ports() -> None:
    exposed = {int(p) for instruction, args in _stages()["runtime"] if instruction == "EXPOSE" for p in args.split()}
    values = _chart_values()
    encoders = values["encoders"]
    for component in (values["gateway"], encoders["text"], encoders["image"], encoders["audio"], values["index"]):
        assert {component["port"], component["metricsPort"]} <= exposed


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (the last matching pattern wins)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            excluded = not negate
    return excluded


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    for stage in _stages().values():
        for sources, _dest in _copies(stage):
            for source in sources:
                if source == "models/default" and not (ROOT / source).exists():
                    continue  # the default bundle lands with its own issue; the build verifies it
                if source == WHEELHOUSE:
                    for variant in ("cpu", "cuda"):
                        assert not _ignored(source.replace("${VARIANT}", variant) + "/x.whl", patterns), variant
                    continue  # made by scripts/image.sh, not in the tree
                assert (ROOT / source).exists(), source
                assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
    for kept_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "data/index/shard-0",
        "tests/support.py",
        "crossmodal/__pycache__/x.pyc",
        "bench/results/x.json",
        "build/reliability/tests.jsonl",
        "build/image/build-cpu.log",
    ):
        assert _ignored(kept_out, patterns), kept_out


@pytest.mark.skipif(
    not (ROOT / "models" / "default" / "model.json").is_file(),
    reason="the default bundle (models/default) is not in the tree yet",
)
def test_the_default_bundle_the_image_copies_verifies() -> None:
    result = subprocess.run(
        [sys.executable, str(VERIFY_BUNDLE), str(ROOT / "models" / "default")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# --- crossmodal-verify-bundle -----------------------------------------------------------------------


def _verify(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(VERIFY_BUNDLE), str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_verify_bundle_accepts_a_bundle_and_names_what_is_wrong_with_a_damaged_one(
    bundle_dir: Path, tmp_path: Path
) -> None:  # noqa: F811
    good = _verify(bundle_dir)
    assert good.returncode == 0, good.stderr
    assert "verified" in good.stdout

    damaged = tmp_path / "damaged"
    shutil.copytree(bundle_dir, damaged)
    tokenizer = damaged / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:-1] + b" ")
    bad = _verify(damaged)
    assert bad.returncode == 1
    assert "tokenizer.json" in bad.stderr and "sha256" in bad.stderr

    extra = tmp_path / "extra"
    shutil.copytree(bundle_dir, extra)
    (extra / "stray.bin").write_bytes(b"x")
    assert _verify(extra).returncode == 1

    assert _verify(tmp_path / "missing").returncode == 1


def test_verify_bundle_requires_the_tower_an_encoder_serves(bundle_dir: Path, tmp_path: Path) -> None:
    """The chart's init container of each encoder names its tower: an audio encoder on a bundle without an
    audio tower stops there, saying what to change."""
    plain = (
        bundle_dir
        if "audio" not in Manifest.load(bundle_dir).towers
        else without_audio_tower(bundle_dir, tmp_path / "p")
    )
    for tower in ("text", "image"):
        assert _verify(plain, "--tower", tower).returncode == 0
    refused = _verify(plain, "--tower", "audio")
    assert refused.returncode == 1
    assert "the bundle has no audio tower (it has text, image)" in refused.stderr
    assert "encoders.audio.enabled=false" in refused.stderr
    with_audio = tmp_path / "with-audio"
    with_audio_tower(plain, with_audio, keep_image=True)
    accepted = _verify(with_audio, "--tower", "audio")
    assert accepted.returncode == 0, accepted.stderr


# --- crossmodal-healthcheck ---------------------------------------------------------------------------


def _probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_healthcheck_over_plaintext_tls_and_mutual_tls(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    tls_env = {
        "CROSSMODAL_TLS_CERT_FILE": str(certs.server_cert),
        "CROSSMODAL_TLS_KEY_FILE": str(certs.server_key),
        "CROSSMODAL_TLS_CLIENT_CA_FILE": str(certs.ca),
    }
    plain = ServiceProcess("services.index", tmp_path / "plain", {"CROSSMODAL_INDEX_DATA_DIR": str(tmp_path / "d1")})
    mutual = ServiceProcess(
        "services.index", tmp_path / "mutual", {"CROSSMODAL_INDEX_DATA_DIR": str(tmp_path / "d2"), **tls_env}
    )
    try:
        plain.wait_ready(timeout=120)
        mutual.wait_ready(timeout=120)
        service = "--service=crossmodal.v1.IndexService"

        ok = _probe(f"--port={plain.port}", service)
        assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING")
        unknown = _probe(f"--port={plain.port}", "--service=crossmodal.v1.NoSuchService")
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr

        client = [f"--ca={certs.ca}", f"--cert={certs.client_cert}", f"--key={certs.client_key}"]
        # The name to verify comes from the environment, as the chart passes ${POD_NAME}-based names.
        ok = _probe(
            f"--port={mutual.port}", service, *client, "--server-name=${PROBE_HOST}", env={"PROBE_HOST": "localhost"}
        )
        assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING"), ok.stderr
        # Without a client certificate a mutual-TLS server refuses the probe.
        assert _probe(f"--port={mutual.port}", service, f"--ca={certs.ca}", "--server-name=localhost").returncode == 1
        # A certificate that does not carry the name is refused.
        assert _probe(f"--port={mutual.port}", service, *client, "--server-name=elsewhere.example").returncode == 1
        # Plaintext against a TLS server fails instead of hanging.
        assert _probe(f"--port={mutual.port}", service, "--timeout=3").returncode == 1
        assert _probe(f"--port={plain.port}", "--cert=x").returncode == 2
    finally:
        plain.close()
        mutual.close()


def test_pip_in_the_build_reaches_no_index_and_only_the_wheelhouse() -> None:
    deps = _stages()["deps"]
    env = " ".join(args for instruction, args in deps if instruction == "ENV")
    assert "PIP_NO_INDEX=1" in env and "PIP_FIND_LINKS=/wheels" in env
    assert (["build/image/wheels/${VARIANT}"], "/wheels") in _copies(deps)
    # The runtime stage never sees the wheelhouse; pip runs from its own virtualenv, never copied.
    assert all("/wheels" not in dest for _src, dest in _copies(_stages()["runtime"]))
    assert 'PIP="/opt/pip/bin/pip --python /opt/venv/bin/python"' in env
    assert "python3 -m venv --without-pip /opt/venv" in DOCKERFILE.read_text()
    script = IMAGE_SCRIPT.read_text()
    assert 'WHEELS="$ROOT/build/image/wheels/$VARIANT"' in script
    assert "--only-binary=:all: --python-version 3.11" in script and '-c "$ROOT/constraints.txt"' in script


def test_the_dockerfile_builds_without_buildkit_or_a_frontend_image() -> None:
    text = DOCKERFILE.read_text()
    # A syntax directive makes BuildKit pull its frontend from a registry; --chmod/--mount need BuildKit.
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    for instruction, args in _instructions():
        if instruction in ("COPY", "ADD", "RUN"):
            assert "--chmod" not in args and "--mount" not in args, (instruction, args)
    assert "DOCKER_BUILDKIT=0 docker build" in IMAGE_SCRIPT.read_text()
