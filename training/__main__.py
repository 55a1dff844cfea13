"""``python -m training <command>``: the same CLI as the ``invasive-train`` console script."""

from training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
