"""Test-wide settings.

Under CI (``CI`` set) hypothesis runs derandomised: the same examples every run, so a gate
never fails on a new random draw; local runs keep exploring new examples.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
