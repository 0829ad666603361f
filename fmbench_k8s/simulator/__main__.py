"""``python -m fmbench_k8s.simulator``: see :mod:`fmbench_k8s.simulator.cli`."""

import sys

from fmbench_k8s.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
