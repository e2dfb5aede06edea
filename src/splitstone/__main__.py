"""`python -m splitstone`: the same as the `splitstone` command (`splitstone up` runs its children so)."""

from splitstone.cli import main

main()
