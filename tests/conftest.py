"""Shared by every test directory: the per-test leak check (``_leaks.py``)."""

pytest_plugins = ["_leaks"]
