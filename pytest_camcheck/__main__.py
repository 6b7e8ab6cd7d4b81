"""``python -m pytest_camcheck``: the ``camcheck`` command line (see :mod:`pytest_camcheck.cli`)."""

from .cli import console

if __name__ == "__main__":
    console()
