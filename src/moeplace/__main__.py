"""`python -m moeplace ...` runs the command-line tool (also under torchrun)."""

from moeplace.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
