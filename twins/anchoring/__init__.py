"""Local side of sensor-data anchoring: Merkle batches, append-only store, Anchorer, verification."""

from twins.anchoring.anchorer import Anchorer, AnchorConflict, FabricAnchorer
from twins.anchoring.batcher import Batcher
from twins.anchoring.record import BatchRecord
from twins.anchoring.store import ReadingStore
from twins.anchoring.verify import VerificationError, VerifiedReading, verify_all_batches, verify_batch, verify_reading, verify_gaps, verify_reading_sync, verify_store_on_ledger

__all__ = [
    "AnchorConflict", "Anchorer", "Batcher", "BatchRecord", "FabricAnchorer",
    "ReadingStore", "VerificationError", "VerifiedReading", "verify_all_batches", "verify_batch", "verify_gaps", "verify_reading",
    "verify_reading_sync", "verify_store_on_ledger",
]
