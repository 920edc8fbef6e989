"""TaskError: an instance of the user's exception class too, picklable, chained."""

import concurrent.futures as cf
import pickle

import cloudpickle

from fedexec import GetTimeoutError, TaskCancelledError, TaskError


class TwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(a)
        self.b = b


def test_task_error_is_also_the_original_class():
    err = TaskError.from_exception(KeyError("k"), "tb", "f")
    assert isinstance(err, KeyError) and isinstance(err, TaskError)
    assert err.cause.args == ("k",)
    assert "tb" in str(err) and "'f'" in str(err)


def test_task_error_pickles_with_unusual_init():
    err = TaskError.from_exception(TwoArgs(1, 2), "tb", "f")
    back = cloudpickle.loads(cloudpickle.dumps(err))
    assert isinstance(back, TwoArgs) and back.b == 2 and back.cause.b == 2


def test_oserror_attributes_survive():
    err = TaskError.from_exception(FileNotFoundError(2, "missing"), "", "f")
    assert isinstance(err, FileNotFoundError)
    assert pickle.loads(pickle.dumps(err)).errno == 2


def test_nested_task_error_keeps_the_original_cause_and_both_tracebacks():
    inner = TaskError.from_exception(ValueError("deep"), "inner tb", "inner")
    outer = TaskError.from_exception(inner, "outer tb", "outer")
    assert type(outer.cause) is ValueError
    assert "inner tb" in str(outer) and "outer tb" in str(outer)


def test_timeout_and_cancel_are_stdlib_compatible():
    assert issubclass(GetTimeoutError, TimeoutError)
    assert issubclass(GetTimeoutError, cf.TimeoutError)
    assert issubclass(TaskCancelledError, cf.CancelledError)
