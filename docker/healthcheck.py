#!/opt/venv/bin/python
"""crossmodal-healthcheck: ask a local server's grpc.health.v1.Health/Check, exit 0 only on SERVING.

Kubernetes' native gRPC probe speaks plaintext only, so with TLS on the Helm chart runs this as an
exec probe instead. `--server-name` is the name expected in the server's certificate (the one
clients dial); `${VAR}` in it is expanded from the environment (e.g. `${POD_NAME}.my-sts.ns.svc...`).

Exit status: 0 SERVING, 1 any other status or an error, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="crossmodal-healthcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address of the server (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="gRPC port")
    parser.add_argument("--service", default="", help="service name to check ('' is the whole server)")
    parser.add_argument("--timeout", type=float, default=4.0, help="deadline of the check in seconds")
    parser.add_argument("--ca", type=Path, help="CA bundle (PEM) to verify the server: enables TLS")
    parser.add_argument("--cert", type=Path, help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--key", type=Path, help="client private key (PEM), for mutual TLS")
    parser.add_argument("--server-name", default="", help="name to verify in the server's certificate")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.cert is not None and args.ca is None:
        parser.error("--cert needs --ca")
    return args


def check(args: argparse.Namespace) -> str:
    """The server's status name (SERVING, NOT_SERVING, ...)."""
    target = f"{args.host}:{args.port}"
    if args.ca is None:
        channel = grpc.insecure_channel(target)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=args.ca.read_bytes(),
            private_key=args.key.read_bytes() if args.key else None,
            certificate_chain=args.cert.read_bytes() if args.cert else None,
        )
        options = []
        server_name = os.path.expandvars(args.server_name)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(target, credentials, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one check; the exit status."""
    args = parse_args(argv)
    try:
        status = check(args)
    except grpc.RpcError as exc:
        print(f"health check failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"health check failed: {exc}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
