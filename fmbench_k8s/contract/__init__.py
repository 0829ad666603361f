"""The contracts every component shares, each in one home:

- ``records``: the per-request record and the stage info the load generator writes, and what makes
  a record impossible;
- ``verdict`` (on ``stats``): the SLO verdict of one stage, for the master and the analysis alike;
- ``layout``: run ids, the run's folder and the one builder of the load generator's and the
  analysis's command lines;
- ``engines``: what each serving engine is on the wire and in a pod;
- ``summary`` and ``report``: what the analysis hands the CLI, the operator and ``compare``.

Components (loadgen, analysis, simulator, operator, local runner) import these and never each
other; the import-linter contracts in pyproject.toml keep it that way.
"""
