"""`python -m eqaudit`: the same command-line app as the `eqaudit` script."""

from .cli import main

if __name__ == "__main__":
    main()
