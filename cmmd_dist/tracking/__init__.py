"""Everything MLflow: the tracking store and experiments, sweep and trial runs, registered models
(:mod:`.store`), the registered model's pyfunc (:mod:`.pyfunc`) and the figures logged with runs
(:mod:`.plots`). The only package that imports mlflow."""

from cmmd_dist.tracking.store import *  # noqa: F401,F403  (the public API; split by responsibility below)
from cmmd_dist.tracking.store import __all__  # noqa: F401
