"""Shared by every test directory: the per-test leak check (``_leaks.py``) and the
module-scoped executors of the library tests (``_executors.py``)."""

pytest_plugins = ["_leaks", "_executors"]
