"""The Dagster 1.13 APIs we use although they are marked beta, each the documented way to do its job.

- ``observable_source_asset``: versions data Dagster does not write (the team's input folders);
- ``Output(data_version=...)``: puts a lake version into Dagster's lineage (``assets.common``
  silences it where it is called, since pytest resets warning filters between tests);
- ``AssetSelection.groups(..., include_sources=True)``: a job that observes those inputs.

Importing this module silences their beta warnings once, so real warnings stay visible.
"""

import warnings

import dagster as dg

for _pattern in (".*observable_source_asset.*", ".*include_sources.*"):
    warnings.filterwarnings("ignore", category=dg.BetaWarning, message=_pattern)
