"""Run the whole fbmarket pipeline: `python main.py [--data DIR] [--out DIR] [--quick]` (docs/architecture.md).

Without --data it generates and uses the embedded SYNTHETIC marketplace, so it runs on a
fresh offline machine.
"""

import sys

from fbmarket.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
