"""``python -m lamo_ray.report SWEEP_NAME_OR_MLFLOW_EXPERIMENT ...``: the report's CLI, `lamo_ray.report.main`."""

import sys

from lamo_ray.report import main

sys.exit(main())
