"""Entry point of ``python -m domains.driving.synthetic kitti|anomaly|clips|preview``; the CLI itself is in :mod:`.cli`."""

import sys

from domains.driving.synthetic.cli import main

if __name__ == "__main__":
    sys.exit(main())
