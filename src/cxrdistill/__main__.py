"""``python -m cxrdistill``: the command line without the installed script."""

from cxrdistill.cli import main

main()
