"""The exit codes of ``fmbench-k8s``: one meaning each, the same in every command (README, "Exit codes")."""

from __future__ import annotations

OK = 0  # done; the answer may still be "no variant meets the SLO"
INVALID = 1  # the input is wrong (a spec, a price table, records, a report): a line names the field
USAGE = 2  # the command line is wrong (argparse uses 2 as well)
FAILED = 3  # the run started and failed: a variant's load, a model server that never answered
REGRESSION = 4  # compare: the candidate is significantly worse than the baseline
INTERRUPTED = 130  # Ctrl-C: what was collected is kept, the report is partial
