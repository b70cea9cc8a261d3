"""`python -m sbrbench` runs the command line."""

from sbrbench.cli import main

main()
