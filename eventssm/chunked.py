"""Placeholder: the chunked CPU path is being written; until then it is the reference loop."""

from eventssm.reference import selective_scan_ref as selective_scan_chunked  # noqa: F401
