"""Analysis: metrics from records, the cost model, the sizing solver and the report.

Entry points (used by the CLI and the operator's analysis Job): ``run.analyze_run`` and
``run.compare_reports``. Modules: ``frames`` (Parquet → DataFrame), ``stats`` (percentiles and
their confidence intervals), ``metrics`` (per stage), ``pricing`` (+ data/prices.yaml),
``sizing``, ``prometheus`` (server metrics), ``report`` (+ data/report_schema.json), ``render``
(HTML, Markdown, CSV), ``plots``, ``synthetic`` (records for tests and benchmarks).
Definitions: docs/metrics.md and docs/cost-model.md.
"""
