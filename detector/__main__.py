import sys

from detector.cli import entry

sys.exit(entry())
