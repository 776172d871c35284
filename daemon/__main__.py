"""`python -m stationd.daemon ...` is `stationd ...`."""

from .cli import main

main()
