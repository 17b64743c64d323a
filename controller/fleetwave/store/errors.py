"""The one error type the store raises, with a message an operator can act on.

Driver exceptions carry multi-line text and tracebacks; the CLI and the API
print `StoreError` as one line and exit non-zero instead.
"""

from __future__ import annotations

import re

import sqlalchemy.exc


class StoreError(Exception):
    """The store cannot do its job (unreachable, locked, incompatible schema, ...).

    `retry` says whether trying again later may help (a lock, a network blip),
    as opposed to a problem an operator must fix (a newer schema).
    """

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(one_line(message))
        self.message = one_line(message)
        self.retry = retry


class StoreFull(StoreError):
    """The disk under the SQLite database is full: the controller stops with this one error
    instead of failing every write (SQLite rolls the transaction back: nothing is corrupt)."""


class Fenced(StoreError):
    """A write from a leader that no longer holds its lease; it must stop leading."""


def one_line(text: str) -> str:
    """`text` squeezed onto one line, so logs and terminals show it whole."""
    return re.sub(r"\s+", " ", text).strip()


def _driver_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    first = next((line for line in text.splitlines() if line.strip()), text)
    return one_line(first)


def translate(exc: BaseException, where: str) -> StoreError:
    """A StoreError that says what failed at `where` (a redacted URL) and what to do."""
    detail = _driver_message(exc)
    lowered = detail.lower()
    if "database is locked" in lowered or "database table is locked" in lowered:
        return StoreError(f"the SQLite database {where} is locked by another process "
                          f"(waited, then gave up); stop the other writer or retry", retry=True)
    if "database or disk is full" in lowered or "no space left on device" in lowered:
        return StoreFull(f"the disk holding the database {where} is full ({detail}); nothing "
                         f"was lost or corrupted: free space or move --store, then restart")
    if "unable to open database" in lowered:
        return StoreError(f"cannot open the SQLite database {where}: {detail}; check that the "
                          f"directory exists and is writable")
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError | OSError) \
            and ("connect" in lowered or "refused" in lowered or "timeout" in lowered
                 or "resolve" in lowered or "no such host" in lowered
                 or "does not exist" in lowered or "authentication" in lowered):
        return StoreError(f"cannot reach the database {where}: {detail}; check --store and "
                          f"that the server is running", retry=True)
    return StoreError(f"database error on {where}: {detail}", retry=isinstance(
        exc, sqlalchemy.exc.OperationalError))
