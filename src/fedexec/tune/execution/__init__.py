"""How an experiment runs: the controller (driver), the trial actors (workers),
the messages between them, actor reuse and checkpoint keeping."""
