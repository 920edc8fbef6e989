"""The node manager's pure core: its decisions as state machines (events in, actions
out), driven by the I/O shell in ``node.py``.

* ``events.py``: the event and action dataclasses.
* ``scheduler.py``: the local scheduler (queue, resource booking, workers, retries).
* ``gpus.py``: which GPUs a lease gets.
"""
