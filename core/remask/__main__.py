"""``python -m remask``: the same as the ``remask`` command."""

from remask.cli import main

raise SystemExit(main())
