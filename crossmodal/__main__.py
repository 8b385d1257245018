"""`python -m crossmodal`: the same as the `crossmodal` console script."""

import sys

from crossmodal.cli import main

sys.exit(main())
