"""``python -m jobchain``: the same as the ``jobchain`` command."""

from jobchain.cli import main

if __name__ == "__main__":
    main()
