"""The DAQ coordinator: ESO OCM-style data acquisitions with await-state semantics and FITS data products."""

from .actor import DaqCoordinator, DaqCoordinatorOptions

__all__ = ["DaqCoordinator", "DaqCoordinatorOptions"]
