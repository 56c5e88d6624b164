"""Everything MLflow, the only package that imports mlflow: where tracking lives (:mod:`.uri`), the names and
values written (:mod:`.schema`), experiments and runs (:mod:`.store`), registered models (:mod:`.registry`),
a sweep's runs from its driver's trial events (:mod:`.recorder`), the registered model's pyfunc (:mod:`.pyfunc`),
the figures logged with runs (:mod:`.plots`) and ``cmmd-dist models``' calls (:mod:`.models`).

The public names below are importable from the package; mlflow is imported only when a store is opened.
"""

from cmmd_dist.tracking.recorder import SweepRecorder
from cmmd_dist.tracking.schema import CHAMPION, registered_name
from cmmd_dist.tracking.store import Tracker, pull
from cmmd_dist.tracking.uri import (
    TrackingError, check_tracking_uri, resolve_tracking_uri, take_credentials, ui_command,
)

__all__ = ["TrackingError", "Tracker", "SweepRecorder", "resolve_tracking_uri", "check_tracking_uri",
           "take_credentials", "registered_name", "ui_command", "pull", "CHAMPION"]
