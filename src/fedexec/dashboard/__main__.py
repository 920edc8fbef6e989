"""``python -m fedexec.dashboard``: the dashboard process (see ``_server``)."""

from ._server import main

main()
