"""``python -m fmbench_k8s.loadgen master|worker ...`` (see docs/loadgen.md).

gevent's monkey-patching must happen before anything imports ssl, socket users or asyncio, so it
is the very first thing this process does.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from fmbench_k8s.loadgen.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
