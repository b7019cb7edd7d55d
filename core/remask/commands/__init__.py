"""Subcommands beyond the spine's ``plugins``/``validate``/``env``: every module in this package is
imported by :mod:`remask.cli` and registers its commands with :func:`remask.cli.command`."""
