"""Persistence: every SQL statement of the project lives in this package."""

from orchestrator.db.base import DB_WRITE_ERRORS, Database, SessionRow, StageRow, Vote, peek_ref

__all__ = ["DB_WRITE_ERRORS", "Database", "SessionRow", "StageRow", "Vote", "peek_ref"]
