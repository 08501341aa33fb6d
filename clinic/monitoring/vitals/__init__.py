"""The vitals fast path: the entry gate, the chart memo and the group-commit entry writer, the only raw-SQL writer of clinical entries."""

from clinic.monitoring.vitals.entry import record_entry
from clinic.monitoring.vitals.memo import ChartMemo
from clinic.monitoring.vitals.writer import EntryWriter

__all__ = ["ChartMemo", "EntryWriter", "record_entry"]
