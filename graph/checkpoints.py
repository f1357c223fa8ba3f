"""checkpoints.sqlite without secrets: LangGraph's serializer, its bytes passed through the redactor.

    saver = redacting_saver(conn, campaign.redactor)      # graph/run.py
    graph = build_graph(campaign, checkpointer=saver)

Every checkpoint and pending write goes through `RedactingSerializer.dumps_typed`: LangGraph's own
`JsonPlusSerializer` encodes it (msgpack), then every secret value and encoding in the bytes is
replaced by as many `*` (`Redactor.bytes_same_length`), so the msgpack stays valid and loads
back with the secret masked. Loading is LangGraph's, unchanged.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from tools.redact import Redactor


class RedactingSerializer(JsonPlusSerializer):
    """JsonPlusSerializer whose output bytes pass `redactor.bytes_same_length`.

    A subclass, not a wrapper, so LangGraph's msgpack allowlist (`with_msgpack_allowlist`, a
    copy of the serializer) keeps working and keeps the redactor."""

    def __init__(self, redactor: Redactor, **kwargs: Any):
        super().__init__(**kwargs)
        self.redactor = redactor

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        type_, data = super().dumps_typed(obj)
        return type_, self.redactor.bytes_same_length(data)


def redacting_saver(conn: sqlite3.Connection, redactor: Redactor) -> SqliteSaver:
    """A SqliteSaver on `conn` whose checkpoints and writes are redacted."""
    return SqliteSaver(conn, serde=RedactingSerializer(redactor))
