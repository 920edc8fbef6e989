"""Integrations of fedexec with the libraries people already use
(``fedexec.integrations.joblib``, ``.dask``, ``.modin``, ``.spark``).
Each submodule is imported on demand and needs its library installed."""
