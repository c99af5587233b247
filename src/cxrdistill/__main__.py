"""``python -m cxrdistill``: the command line, also as ``torchrun ... -m cxrdistill train ...``."""

from cxrdistill.cli import main

main()
