"""Every command line of cmmd_dist: the ``cmmd-dist`` console script (:mod:`.app`, dispatching to
:mod:`.train`, :mod:`.prepare`, :mod:`.synth`, :mod:`.compare`, :mod:`.models`), ``python -m cmmd_dist.tune``
(:mod:`.tune`). The train options are generated from ``config.RunConfig``'s fields and the tune options from
``config.SweepConfig``'s, by one function (:mod:`.options`); the one-line-error parser they share is
:mod:`.parser`. The only package that imports argparse."""

from cmmd_dist.cli.app import default_config_path, main

__all__ = ["main", "default_config_path"]
