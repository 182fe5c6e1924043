"""`python -m sluice ...` is the `sluice` command (child processes of `sluice up` use it)."""

from sluice.cli import main

main()
