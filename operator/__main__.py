"""``python -m fmbench_k8s.operator``: the same as ``fmbench-k8s operator``."""

import sys

from fmbench_k8s.operator.run import main

sys.exit(main())
