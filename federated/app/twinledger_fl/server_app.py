"""ServerApp component of the FAB (see federated/serverapp.py)."""

from federated.serverapp import app

__all__ = ["app"]
