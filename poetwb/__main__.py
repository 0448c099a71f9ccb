"""`python -m poetwb` runs the same entry point as the `poetwb` console script."""

from poetwb.cli import main

raise SystemExit(main())
