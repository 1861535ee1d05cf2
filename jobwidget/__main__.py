"""`python -m jobwidget ...`: the same command line as the `jobwidget` console script."""

from jobwidget.surfaces.cli import main

raise SystemExit(main())
