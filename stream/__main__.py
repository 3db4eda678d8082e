"""`python -m stream` runs the same CLI as the `capi-stream` script."""

from stream.cli import main

raise SystemExit(main())
