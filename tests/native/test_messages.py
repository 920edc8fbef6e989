"""The typed messages (``backends/native/messages.py``): every message survives its
wire form (msgpack included), and a wire form that does not fit the schema is a
MalformedMessage, never a half-decoded message. No processes."""

from __future__ import annotations

import re

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedexec.backends.native import messages as m
from fedexec.backends.native.jobs import JobCall, JobErrorKind
from fedexec.exceptions import ProtocolError


def _wire(value):
    """Through msgpack and back, as it travels."""
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


_text = st.text(max_size=20)
_requests = st.one_of(
    st.builds(m.JobSubmit, st.lists(_text, max_size=5), st.none() | st.binary(max_size=50)),
    st.builds(m.JobStatus, _text),
    st.builds(m.JobLogs, _text, st.integers(0, 2**40), st.integers(0, 2**30)),
    st.builds(m.JobStop, _text, st.floats(0, 1e6)),
    st.just(m.JobList()),
)


@given(_requests)
def test_every_job_request_round_trips(request):
    assert m.decode(_wire(m.encode(request)), m.JOB_REQUESTS) == request


@given(st.one_of(st.builds(m.JobDone, st.none() | _text | st.lists(st.integers(-(2**63), 2**63 - 1))),
                 st.builds(m.JobRefused, st.sampled_from(list(JobErrorKind)), _text)))
def test_every_job_answer_round_trips(answer):
    assert m.decode(_wire(m.encode(answer)), m.JOB_ANSWERS) == answer


def test_the_tags_are_the_documented_job_calls():
    assert {int(c): c.name for c in JobCall} == {
        tag: cls.__name__.removeprefix("Job").upper() for tag, cls in m.JOB_REQUESTS.items()}


@pytest.mark.parametrize(("raw", "text"), [
    ("not a list", "must be"),
    ([], "must be"),
    ([99, "x"], "unknown message tag 99"),
    ([True, ["ls"], None], "unknown message tag True"),  # True is not SUBMIT's 1
    ([int(JobCall.STATUS)], "takes 1 to 1 fields, not 0"),
    ([int(JobCall.STATUS), "a", "b"], "takes 1 to 1 fields, not 2"),
    ([int(JobCall.STATUS), 7], "JobStatus.job_id must be str, not int"),
    ([int(JobCall.SUBMIT), ["ok", 3]], "JobSubmit.argv"),
    ([int(JobCall.LOGS), "j", True, 10], "JobLogs.offset must be int, not bool"),
    ([int(JobCall.STOP), "j", "soon"], "JobStop.grace"),
])
def test_a_request_that_does_not_fit_its_schema_is_malformed(raw, text):
    with pytest.raises(m.MalformedMessage, match=re.escape(text)) as info:
        m.decode(raw, m.JOB_REQUESTS)
    assert isinstance(info.value, ProtocolError) and isinstance(info.value, ValueError)


def test_hello_is_a_map_that_ignores_unknown_keys_and_names_missing_ones():
    hello = m.Hello(2, "0.1.0", "driver")
    wire = _wire(m.encode(hello))
    assert wire == {"protocol": 2, "fedexec": "0.1.0", "role": "driver"}
    assert m.decode_map({**wire, "from_the_future": 1}, m.Hello) == hello
    with pytest.raises(m.MalformedMessage, match="lacks role"):
        m.decode_map({"protocol": 2, "fedexec": "0.1.0"}, m.Hello)
    with pytest.raises(m.MalformedMessage, match=r"Hello\.protocol"):
        m.decode_map({**wire, "protocol": "2"}, m.Hello)
    answer = m.HelloAnswer(2, "0.1.0", ["ProtocolError", "no"])
    assert m.decode_map(_wire(m.encode(answer)), m.HelloAnswer) == answer
    assert m.decode_map({"protocol": 2, "fedexec": "x"}, m.HelloAnswer).error is None


def test_messages_are_frozen():
    with pytest.raises(AttributeError):
        m.JobStatus("a").job_id = "b"  # type: ignore[misc]
