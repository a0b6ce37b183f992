"""ClientApp component of the FAB (see federated/clientapp.py)."""

from federated.clientapp import app

__all__ = ["app"]
