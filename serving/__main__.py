"""`python -m serving` runs the riskroute command line."""

from serving.cli import main

main()
