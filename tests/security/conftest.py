"""A cluster whose every link is TLS: mTLS encoders and shards, and gateways that check API keys.

Every process gets its own certificate from a CA made for the session, logs at debug level, and keeps
its log under one directory, so the secret-scanning test can read all of them.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from crossmodal.cluster import DEFAULT_BUNDLE
from tests.security.pki import Authority, Leaf
from tests.support import ServiceProcess

# Distinctive values, so that any appearance in a log is unmistakably a leak.
API_KEYS = ("sk-test-alpha-5f1d8c2a9e7b4036", "sk-test-beta-a04c6e91d2f37b58")
# The third rate key is only used by the log test, so it cannot eat into the budgets the rate test measures.
RATE_KEYS = ("sk-rate-gamma-71e0b9d43c5a2f86", "sk-rate-delta-c38f25a6e9d17b40", "sk-rate-epsilon-2a9f64d0b17ce853")
# What misbehaving clients send: an unknown key and a prefix of a valid one (timing attacks guess prefixes).
WRONG_KEYS = ("sk-test-wrong-9d2b7e41f06c83a5", API_KEYS[0][:-1])
RATE_RPS = 0.5
RATE_BURST = 3
TIMEOUT = 30.0
# Keep the encoders and shards light: the test machine's cores are shared.
_LIGHT = {
    "CROSSMODAL_LOG_LEVEL": "debug",
    "CROSSMODAL_ENCODER_INTRA_OP_THREADS": "1",
    "CROSSMODAL_ENCODER_PREPROCESS_WORKERS": "1",
    "CROSSMODAL_INDEX_THREADS": "1",
    "CROSSMODAL_INDEX_WORKERS": "2",
    "CROSSMODAL_GRACE_SECONDS": "2",
}


@dataclass
class SecureCluster:
    """The processes, certificates and keys of the TLS cluster."""

    root: Path
    pki: Authority
    rogue: Authority
    client: Leaf
    rogue_client: Leaf
    gateway_client: Leaf
    text: ServiceProcess | None = None
    image: ServiceProcess | None = None
    shards: list[ServiceProcess] = field(default_factory=list)
    gateways: dict[str, ServiceProcess] = field(default_factory=dict)
    started: list[ServiceProcess] = field(default_factory=list)

    @property
    def backends(self) -> list[ServiceProcess]:
        """The encoders and shards, all requiring client certificates."""
        assert self.text is not None and self.image is not None
        return [self.text, self.image, *self.shards]

    def backend_env(self) -> dict[str, str]:
        """Where the gateway finds its backends."""
        assert self.text is not None and self.image is not None
        return {
            "CROSSMODAL_GATEWAY_TEXT_ENCODERS": self.text.address,
            "CROSSMODAL_GATEWAY_IMAGE_ENCODERS": self.image.address,
            "CROSSMODAL_GATEWAY_SHARDS": ";".join(s.address for s in self.shards),
        }

    def client_tls_env(self) -> dict[str, str]:
        """The gateway's side of mutual TLS towards its backends."""
        return {
            "CROSSMODAL_CLIENT_TLS_CA_FILE": str(self.pki.ca),
            "CROSSMODAL_CLIENT_TLS_CERT_FILE": str(self.gateway_client.cert),
            "CROSSMODAL_CLIENT_TLS_KEY_FILE": str(self.gateway_client.key),
        }

    def start(self, name: str, module: str, env: Mapping[str, str]) -> ServiceProcess:
        """Start `module` in its own directory under the cluster root (not waiting for it)."""
        process = ServiceProcess(module, self.root / "procs" / name, {**_LIGHT, **env})
        self.started.append(process)
        return process

    def server_tls_env(self, name: str, *, mutual: bool) -> dict[str, str]:
        """A fresh server certificate for process `name`; with `mutual`, clients must present one too."""
        leaf = self.pki.issue(name, server=True)
        env = {"CROSSMODAL_TLS_CERT_FILE": str(leaf.cert), "CROSSMODAL_TLS_KEY_FILE": str(leaf.key)}
        if mutual:
            env["CROSSMODAL_TLS_CLIENT_CA_FILE"] = str(self.pki.ca)
        return env

    def log_files(self) -> list[Path]:
        """Every log any process of these tests wrote."""
        return sorted((self.root / "procs").rglob("*.log"))

    def private_keys(self) -> list[Path]:
        """Every private key of both authorities."""
        return [*self.pki.private_keys(), *self.rogue.private_keys()]

    def channel(self, address: str, client: Leaf | None = None, ca: bytes | None = None) -> grpc.Channel:
        """A blocking TLS channel that trusts the session CA (or `ca`), presenting `client` when given."""
        credentials = grpc.ssl_channel_credentials(
            ca if ca is not None else self.pki.ca_bytes(),
            client.key_bytes() if client else None,
            client.cert_bytes() if client else None,
        )
        return grpc.secure_channel(address, credentials)


@pytest.fixture(scope="package")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    """Encoders and two shards with mutual TLS, and three TLS gateways with API keys (one rate-limited)."""
    root = tmp_path_factory.mktemp("security")
    pki = Authority(root / "pki", "crossmodal-security-test-ca")
    rogue = Authority(root / "rogue", "crossmodal-rogue-ca")
    cluster = SecureCluster(
        root=root,
        pki=pki,
        rogue=rogue,
        client=pki.issue("app-client", client=True),
        rogue_client=rogue.issue("rogue-client", client=True),
        gateway_client=pki.issue("gateway-client", client=True),
    )
    keys = root / "api-keys.txt"
    keys.write_text("# keys of the security tests\n" + "\n".join(API_KEYS) + "\n")
    rate_keys = root / "rate-keys.txt"
    rate_keys.write_text("\n".join(RATE_KEYS) + "\n")
    try:
        encoder = {"CROSSMODAL_ENCODER_BUNDLE": str(DEFAULT_BUNDLE), "CROSSMODAL_ENCODER_PRECISION": "fp32"}
        cluster.text = cluster.start(
            "encoder-text", "services.encoder_text", {**encoder, **cluster.server_tls_env("encoder-text", mutual=True)}
        )
        cluster.image = cluster.start(
            "encoder-image",
            "services.encoder_image",
            {**encoder, **cluster.server_tls_env("encoder-image", mutual=True)},
        )
        for n in range(2):
            cluster.shards.append(
                cluster.start(
                    f"index-{n}",
                    "services.index",
                    {
                        "CROSSMODAL_INDEX_DATA_DIR": str(root / "data" / f"index-{n}"),
                        "CROSSMODAL_INDEX_SHARDS": str(n),
                        **cluster.server_tls_env(f"index-{n}", mutual=True),
                    },
                )
            )
        for process in cluster.backends:
            process.wait_ready(timeout=120)
        common = {**cluster.backend_env(), **cluster.client_tls_env()}
        gateways = {
            # TLS for its callers (no client certificate asked), API keys.
            "tls": {
                **cluster.server_tls_env("gateway-tls", mutual=False),
                "CROSSMODAL_GATEWAY_API_KEYS_FILE": str(keys),
            },
            # Mutual TLS for its callers too.
            "mtls": {
                **cluster.server_tls_env("gateway-mtls", mutual=True),
                "CROSSMODAL_GATEWAY_API_KEYS_FILE": str(keys),
            },
            "limited": {
                **cluster.server_tls_env("gateway-limited", mutual=False),
                "CROSSMODAL_GATEWAY_API_KEYS_FILE": str(rate_keys),
                "CROSSMODAL_GATEWAY_RATE_LIMIT_RPS": str(RATE_RPS),
                "CROSSMODAL_GATEWAY_RATE_LIMIT_BURST": str(RATE_BURST),
            },
        }
        for name, env in gateways.items():
            cluster.gateways[name] = cluster.start(f"gateway-{name}", "services.gateway", {**common, **env})
        for process in cluster.gateways.values():
            process.wait_ready(timeout=60)
        yield cluster
    finally:
        for process in reversed(cluster.started):
            if process.proc.poll() is None:
                process.proc.terminate()
        for process in cluster.started:
            # A process that ignores SIGTERM is killed by close().
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(15)
            process.close()
