"""The service image as built: what is in its final stage, who runs it, and how big it is.

Built by scripts/image.sh (`make image BASE=local`: a Debian bookworm base made with mmdebstrap, the
wheels downloaded on the host) through the session fixture `service_image`; skipped, with the reason,
when no Docker engine answers. The cluster run from this image is in test_image_cluster.py.
"""

from __future__ import annotations

import json
import subprocess
import tomllib

import pytest

from tests.deploy.chart import CHART
from tests.deploy.conftest import BuiltImage
from tests.support import ROOT

pytestmark = pytest.mark.timeout(1500)

# Measured 560 MB (bookworm minbase + python3 125 MB, the virtualenv ~420 MB of which PyAV's FFmpeg ~104 MB for
# audio decoding, the bundle 13 MB): a bound that catches a compiler, a pip cache or a second copy of the
# dependencies slipping into the final stage.
MAX_IMAGE_BYTES = 620_000_000

# Run inside the image (read-only root, the chart's user, no network): what the final stage holds.
_INSPECT = r"""
import json, os, shutil, sys
venv = "/opt/venv/lib/python3.11/site-packages"
py_files = [os.path.join(d, f) for top in ("/opt/venv/lib", "/opt/crossmodal")
            for d, _, fs in os.walk(top) for f in fs if f.endswith(".py")]
def compiled(path):
    d, f = os.path.split(path)
    cache = os.path.join(d, "__pycache__")
    stem = f[:-3] + ".cpython-311"
    return os.path.isdir(cache) and any(n.startswith(stem) for n in os.listdir(cache))
print(json.dumps({
    "tools": {t: shutil.which(t) for t in ("gcc", "cc", "c++", "g++", "clang", "make", "pip", "pip3")},
    "paths": {p: os.path.exists(p) for p in ("/wheels", "/src", "/opt/pip", "/opt/venv/bin/pip", "/root/.cache",
                                             "/var/cache/apt/pkgcache.bin", "/usr/include/python3.11")},
    "debs": [f for f in os.listdir("/var/cache/apt/archives") if f.endswith(".deb")]
            if os.path.isdir("/var/cache/apt/archives") else [],
    "apt_lists": [f for f in os.listdir("/var/lib/apt/lists") if f not in ("lock", "partial", "auxfiles")]
                 if os.path.isdir("/var/lib/apt/lists") else [],
    "not_compiled": [p for p in py_files if not compiled(p)][:5],
    "py_files": len(py_files),
    "packages": sorted(os.listdir(venv)),
    "project": sorted(os.listdir("/opt/crossmodal")),
    "bundle": sorted(os.listdir("/app/models/default")),
    "data": [os.stat("/data").st_uid, os.stat("/data").st_gid],
}))
"""


def _run(image: BuiltImage, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    """`docker run` of the image with a read-only root and no network, as its own user unless `user`."""
    return subprocess.run(
        ["docker", "run", "--rm", "--read-only", "--network=none", *([f"--user={user}"] if user else []), image.ref]
        + list(args),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_image_is_non_root_small_and_labelled(service_image: BuiltImage) -> None:
    inspect = subprocess.run(
        ["docker", "image", "inspect", service_image.ref], capture_output=True, text=True, timeout=60
    )
    config = json.loads(inspect.stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["crossmodal-gateway"]
    labels = config["Labels"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["io.crossmodal.variant"] == "cpu"
    assert len(labels["org.opencontainers.image.revision"]) == 40, labels
    assert "io.crossmodal.stage" not in labels, "the runtime stage carries the build stage's label"
    size_mb = service_image.size_bytes / 1e6
    print(f"\nimage {service_image.ref}: {size_mb:.0f} MB, built in {service_image.build_seconds:.0f} s")
    print("\n".join(line for line in service_image.report.splitlines() if line.startswith("image.sh:")))
    assert service_image.size_bytes < MAX_IMAGE_BYTES, f"{size_mb:.0f} MB"


def test_the_final_stage_holds_no_compiler_pip_or_cache(service_image: BuiltImage) -> None:
    # As root, so that nothing under /root is hidden from the look.
    result = _run(service_image, "python", "-c", _INSPECT, user="0:0")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    as_default = _run(service_image, "python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert as_default.stdout.split() == ["10001", "10001"], as_default
    assert seen["tools"] == dict.fromkeys(seen["tools"]), seen["tools"]
    assert not any(seen["paths"].values()), seen["paths"]
    assert seen["debs"] == []
    assert seen["apt_lists"] == [], "apt's package lists are left in the image"
    # Bytecode is compiled at build time: with a read-only root nothing could be cached at run time.
    assert seen["py_files"] > 1000 and seen["not_compiled"] == [], seen["not_compiled"]
    for package in ("onnxruntime", "usearch", "grpc", "nats", "tokenizers", "crossmodal.pth"):
        assert package in seen["packages"], package
    assert {"crossmodal", "services", "bin"} <= set(seen["project"]), seen["project"]
    assert not {"pip", "setuptools", "wheel", "torch"} & set(seen["packages"])
    bundle = json.loads((ROOT / "models" / "default" / "model.json").read_text())
    listed = set(bundle["files"])
    assert "model.json" in seen["bundle"] and listed <= set(seen["bundle"]), (listed, seen["bundle"])
    # The index's data directory belongs to the chart's user: a fresh volume mounted there is writable.
    assert seen["data"] == [10001, 10001]


def test_the_installed_helpers_work_in_the_image(service_image: BuiltImage) -> None:
    verify = _run(service_image, "crossmodal-verify-bundle", "/app/models/default")
    assert verify.returncode == 0 and "verified" in verify.stdout, verify.stderr
    # Nothing listens in this container: the probe fails fast with its documented status, not a traceback.
    probe = _run(service_image, "crossmodal-healthcheck", "--port=50054", "--timeout=2")
    assert probe.returncode == 1 and "health check failed" in probe.stderr, probe.stderr
    usage = _run(service_image, "crossmodal-healthcheck")
    assert usage.returncode == 2
    # The chart's image path for the bundle is the image's default, so an encoder needs no extra setting.
    values = (CHART / "values.yaml").read_text()
    assert "imagePath: /app/models/default" in values
    env = _run(service_image, "printenv", "CROSSMODAL_ENCODER_BUNDLE", "ORT_DISABLE_TELEMETRY")
    assert env.stdout.split() == ["/app/models/default", "1"], env
