#!/usr/bin/env python
"""The sample API's manage.py: ``python sample_api/manage.py runserver``."""
import os
import sys
from pathlib import Path


def main() -> None:
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    sys.path.insert(1, str(here.parent))  # drf_grip from a checkout, even before pip install
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sample_api.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
