"""Every command line of cmmd_dist: the ``cmmd-dist`` console script (:mod:`.app`: train, data, compare,
models), ``python -m cmmd_dist.tune`` (:mod:`.tune`, its parser derived from ``config.SweepConfig``) and the
one-line-error parser they share (:mod:`.parser`). The only package that imports argparse."""

from cmmd_dist.cli.app import default_config_path, main

__all__ = ["main", "default_config_path"]
