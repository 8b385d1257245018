"""Server and channel credentials for optional TLS and mutual TLS."""

from __future__ import annotations

import grpc

from services.common.config import TLSConfig


def _read(path: object) -> bytes | None:
    if path is None:
        return None
    with open(str(path), "rb") as fh:
        return fh.read()


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """Credentials for a TLS server; with a client CA, clients must present a certificate (mTLS)."""
    key, cert = _read(tls.key_file), _read(tls.cert_file)
    if key is None or cert is None:
        raise ValueError("a TLS server needs both a certificate and a private key")
    client_ca = _read(tls.ca_file)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    """Credentials for a TLS channel; with a client certificate the channel does mutual TLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.key_file),
        certificate_chain=_read(tls.cert_file),
    )
