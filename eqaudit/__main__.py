"""``python -m eqaudit``: the same command line as ``eqaudit`` (so ``torchrun -m eqaudit scan ...`` works)."""

from .cli import main

if __name__ == "__main__":
    main()
