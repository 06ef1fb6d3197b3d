"""`python -m controller.cli`: the same as the `kubectl-modelrollout` executable."""

from controller.cli.main import main

raise SystemExit(main())
