"""The seed's models, by the seed's name (``from grove.models import WorktreeMetadata``).

They live in ``grove.core.models``, where the state layer can reach them without importing upwards.
"""

from .core.models import (STATUSES, ConflictForecast, ConflictPair, MergeResult, MergeSummary,  # noqa: F401
                          SyncResult, WorktreeExecutionResult, WorktreeMetadata, as_utc, format_time,
                          parse_time)

__all__ = ["STATUSES", "ConflictForecast", "ConflictPair", "MergeResult", "MergeSummary", "SyncResult",
           "WorktreeExecutionResult", "WorktreeMetadata", "as_utc", "format_time", "parse_time"]
