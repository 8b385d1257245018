#!/opt/venv/bin/python
"""crossmodal-verify-bundle: check a model bundle against its manifest (model.json) before serving it.

Every file the manifest lists must be present with its size and sha256, and no unlisted file may be
there; with `--tower`, the bundle must also have that tower (the chart's init container of each encoder
names its own, so that an audio encoder given a bundle without an audio tower stops there, saying so).
Used by the image build (the default bundle) and by the Helm chart's init container.

Exit status: 0 verified, 1 the bundle is damaged or incomplete, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from crossmodal.bundle import BundleError, verify_bundle
from crossmodal.bundle.manifest import TOWERS


def main(argv: Sequence[str] | None = None) -> int:
    """Verify the bundle directory given on the command line; the exit status."""
    parser = argparse.ArgumentParser(prog="crossmodal-verify-bundle", description=__doc__.split("\n")[0])
    parser.add_argument("bundle", help="bundle directory (holding model.json)")
    parser.add_argument("--tower", choices=TOWERS, help="also require this tower (the one the encoder serves)")
    args = parser.parse_args(argv)
    try:
        manifest = verify_bundle(args.bundle)
    except (BundleError, OSError, ValueError) as exc:
        print(f"crossmodal-verify-bundle: {args.bundle}: {exc}", file=sys.stderr)
        return 1
    if args.tower is not None and args.tower not in manifest.towers:
        # Only the audio encoder is optional: a text and image bundle is the usual case for it.
        off = " or turn the audio encoder off (Helm: encoders.audio.enabled=false)" if args.tower == "audio" else ""
        print(
            f"crossmodal-verify-bundle: {args.bundle}: the bundle has no {args.tower} tower (it has "
            f"{', '.join(manifest.towers)}): give the {args.tower} encoder a bundle with one{off}",
            file=sys.stderr,
        )
        return 1
    print(f"crossmodal-verify-bundle: {args.bundle}: {manifest.model_id} verified ({len(manifest.files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
