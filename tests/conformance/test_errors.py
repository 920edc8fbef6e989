"""Task errors (API.md "Errors": ``TaskError``, and "Semantics in detail")."""

from __future__ import annotations

import errno
import os
import pickle

import pytest
from _support import fail, identity, square, touch

import fedexec

T = 30


class CodeError(Exception):
    """An exception whose ``__init__`` takes other arguments than its message."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class KeywordOnlyError(Exception):
    def __init__(self, *, reason):
        super().__init__(f"because {reason}")
        self.reason = reason


class NoArgumentError(Exception):
    def __init__(self):
        super().__init__("no arguments needed")


class AppError(Exception):
    pass


class SpecificAppError(AppError):
    pass


def raise_code_error(code, detail):
    raise CodeError(code, detail)


def raise_keyword_only_error(reason):
    raise KeywordOnlyError(reason=reason)


def raise_no_argument_error():
    raise NoArgumentError()


def raise_specific_app_error():
    raise SpecificAppError("specific")


def a_distinctively_named_failing_function():
    return helper_that_raises_inside()


def helper_that_raises_inside():
    raise ValueError("raised two frames deep")


def open_missing_file(path):
    with open(path) as f:
        return f.read()


def nested_fail(depth):
    if depth == 0:
        raise CodeError(7, "from the deepest task")
    return fedexec.get(fedexec.remote(nested_fail).remote(depth - 1), timeout=T)


def touch_then_return(marker, value):
    touch(marker)
    return value


def test_task_error_is_an_instance_of_the_original_exception_class(ex):
    with pytest.raises(ValueError) as info:
        ex.get(ex.submit(fail, "bad"), timeout=T)
    assert isinstance(info.value, fedexec.TaskError)
    assert isinstance(info.value, fedexec.FedexecError)


def test_except_clause_for_a_base_class_catches_the_task_error(ex):
    with pytest.raises(LookupError):
        ex.get(ex.submit(fail, "missing", KeyError), timeout=T)
    with pytest.raises(AppError):
        ex.get(ex.submit(raise_specific_app_error), timeout=T)


def test_task_error_can_be_caught_as_task_error(ex):
    with pytest.raises(fedexec.TaskError):
        ex.get(ex.submit(fail, "x", ZeroDivisionError), timeout=T)


def test_task_error_cause_is_the_original_exception(ex):
    with pytest.raises(fedexec.TaskError) as info:
        ex.get(ex.submit(fail, "the message", KeyError), timeout=T)
    cause = info.value.cause
    assert type(cause) is KeyError
    assert cause.args == ("the message",)


def test_task_error_keeps_the_original_args(ex):
    with pytest.raises(ValueError) as info:
        ex.get(ex.submit(fail, "kept args"), timeout=T)
    assert info.value.args == ("kept args",)


def test_task_error_str_holds_the_remote_traceback(ex):
    with pytest.raises(ValueError) as info:
        ex.get(ex.submit(a_distinctively_named_failing_function), timeout=T)
    text = str(info.value)
    assert "raised two frames deep" in text
    assert "ValueError" in text
    assert "a_distinctively_named_failing_function" in text
    assert "helper_that_raises_inside" in text


def test_custom_exception_with_unusual_init_signature_is_reraised(ex):
    with pytest.raises(CodeError) as info:
        ex.get(ex.submit(raise_code_error, 404, "not found"), timeout=T)
    err = info.value
    assert err.code == 404 and err.detail == "not found"
    assert err.cause.code == 404
    assert "404: not found" in str(err)


def test_custom_exception_with_keyword_only_init_is_reraised(ex):
    with pytest.raises(KeywordOnlyError) as info:
        ex.get(ex.submit(raise_keyword_only_error, "reasons"), timeout=T)
    assert info.value.reason == "reasons"
    assert isinstance(info.value.cause, KeywordOnlyError)


def test_custom_exception_with_no_init_arguments_is_reraised(ex):
    with pytest.raises(NoArgumentError) as info:
        ex.get(ex.submit(raise_no_argument_error), timeout=T)
    assert "no arguments needed" in str(info.value)


def test_oserror_subclass_keeps_errno(ex, tmp_path):
    missing = str(tmp_path / "does-not-exist")
    with pytest.raises(FileNotFoundError) as info:
        ex.get(ex.submit(open_missing_file, missing), timeout=T)
    assert info.value.errno == errno.ENOENT
    assert info.value.cause.errno == errno.ENOENT
    assert info.value.cause.filename == missing


def test_task_error_survives_pickling_with_its_classes(ex):
    err = ex.submit(raise_code_error, 1, "pickled").exception(timeout=T)
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, CodeError) and isinstance(clone, fedexec.TaskError)
    assert clone.cause.code == 1
    assert "1: pickled" in str(clone)


def test_error_in_nested_tasks_keeps_the_innermost_type_and_cause(ex):
    with pytest.raises(CodeError) as info:
        ex.get(ex.submit(nested_fail, 3), timeout=T)
    err = info.value
    assert type(err.cause) is CodeError
    assert not isinstance(err.cause, fedexec.TaskError)
    assert err.cause.code == 7
    assert "from the deepest task" in str(err)


def test_task_whose_argument_ref_failed_raises_that_error_type(ex, tmp_path):
    marker = str(tmp_path / "downstream-ran")
    upstream = ex.submit(raise_code_error, 500, "upstream")
    downstream = ex.submit(touch_then_return, marker, upstream)
    with pytest.raises(CodeError) as info:
        ex.get(downstream, timeout=T)
    assert info.value.code == 500
    assert not os.path.exists(marker)


def test_failed_argument_error_propagates_through_a_chain_of_tasks(ex):
    ref = ex.submit(fail, "root cause", KeyError)
    for _ in range(3):
        ref = ex.submit(identity, ref)
    with pytest.raises(KeyError, match="root cause"):
        ex.get(ref, timeout=T)


def test_failed_keyword_argument_ref_fails_the_task(ex):
    bad = ex.submit(fail, "kw", IndexError)
    with pytest.raises(IndexError):
        ex.get(ex.submit(identity, x=bad), timeout=T)


def test_ref_nested_in_a_container_does_not_fail_the_task(ex):
    bad = ex.submit(fail, "only nested")
    # A nested ref is passed as a ref, so the task runs and can inspect it.
    assert ex.get(ex.submit(len, [bad, bad]), timeout=T) == 2


def test_a_failing_task_does_not_affect_other_tasks(ex):
    refs = [ex.submit(square, 1), ex.submit(fail), ex.submit(square, 3)]
    assert ex.get(refs[0], timeout=T) == 1
    assert ex.get(refs[2], timeout=T) == 9
    with pytest.raises(ValueError):
        ex.get(refs[1], timeout=T)
    assert ex.get(ex.submit(square, 4), timeout=T) == 16
