"""The contracts every component shares: the per-request record, the SLO verdict of a stage and
the statistics it rests on. Components (loadgen, analysis, operator, local runner) import these
and never each other; the import-linter contracts in pyproject.toml keep it that way."""
