"""The public surface: every exported name exists once, is documented, and
``import fedexec`` stays light."""

import subprocess
import sys

import pytest

import fedexec


def test_all_names_exist_and_are_unique():
    assert len(set(fedexec.__all__)) == len(fedexec.__all__)
    for name in fedexec.__all__:
        assert hasattr(fedexec, name), name


@pytest.mark.parametrize("name", [n for n in fedexec.__all__ if not n.startswith("__")])
def test_public_name_has_a_docstring(name):
    obj = getattr(fedexec, name)
    if isinstance(obj, str):
        return
    assert (obj.__doc__ or "").strip(), f"fedexec.{name} has no docstring"


def test_import_does_not_pull_heavy_libraries():
    code = (
        "import sys, fedexec\n"
        "heavy = [m for m in ('dask', 'pyspark', 'ray', 'torch', 'pandas', 'numpy')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == ""


def test_exceptions_have_one_root_and_docstrings():
    for name in fedexec.exceptions.__all__:
        cls = getattr(fedexec.exceptions, name)
        assert issubclass(cls, fedexec.FedexecError)
        assert cls.__doc__


def test_remote_function_called_directly_is_a_type_error():
    @fedexec.remote
    def f():
        return 1

    with pytest.raises(TypeError, match=r"f\.remote"):
        f()
