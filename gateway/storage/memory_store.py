"""An in-memory store: the storage port over dictionaries of rows, for service tests and fault injection.

It keeps exactly the rows the SQL store would write (the same :class:`BatchRows` operations), checks
what a strict database checks (unique EventIds per source, text that PostgreSQL could hold), commits
a batch whole or not at all, and rebuilds a model from its rows the way the SQL store does
(:func:`gateway.storage.store.restore_model`). Tests can hold a commit open (:meth:`hold`), make the
next commits fail as an outage or as bad data (:meth:`fail_next`), and compare its rows with a replay.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from sqlalchemy import JSON

from gateway.cell.model import CellModel
from gateway.jobs.model import Job, Unit
from gateway.storage import rows as R
from gateway.storage import schema as S
from gateway.storage import store
from gateway.storage.batch import BatchRows, Loaded
from gateway.storage.store import LoggedAnswer

Row = dict[str, Any]
Key = tuple[str, str]


class StoreOutage(Exception):
    """The in-memory store "cannot write at all" (what disk full or a lost connection is for SQL)."""


class BadRow(Exception):
    """A row a strict database would refuse (what DataError or IntegrityError is for SQL)."""


# Tables whose key the database numbers (``autoincrement=True``): the rows come without it.
_AUTO = {
    name
    for name, table in S.metadata.tables.items()
    if [c.autoincrement for c in table.primary_key.columns] == [True] and "id" in table.primary_key.columns
}


_JSON_COLUMNS = {
    name: frozenset(c.name for c in table.columns if isinstance(c.type, JSON))
    for name, table in S.metadata.tables.items()
}


def _stored(table: str, row: Row) -> Row:
    """The row as a database hands it back: JSON columns through JSON, nothing shared with the caller."""
    _check_text(row, table)
    out = dict(row)
    for column in _JSON_COLUMNS[table]:
        if column in out and out[column] is not None:
            out[column] = json.loads(json.dumps(out[column]))
    return out


def _key_of(table: str, row: Row) -> tuple[Any, ...]:
    return tuple(row[c.name] for c in S.metadata.tables[table].primary_key.columns)


def _check_text(value: Any, where: str) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise BadRow(f"{where}: NUL in text")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRow(f"{where}: not UTF-8 ({exc})") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, where)
            _check_text(v, where)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_text(v, where)


class MemoryStore:
    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple[Any, ...], Row]] = {name: {} for name in S.metadata.tables}
        self._next_id: dict[str, int] = {}
        self._faults: list[Callable[[BatchRows], BaseException | None]] = []
        self._gate: asyncio.Event | None = None
        self.commits = 0
        self.committing = asyncio.Event()  # set while a commit waits at a held gate

    # ------------------------------------------------------------------ test controls
    @contextmanager
    def hold(self) -> Iterator[asyncio.Event]:
        """Commits wait until the event yielded is set (or the block ends)."""
        gate = self._gate = asyncio.Event()
        try:
            yield gate
        finally:
            gate.set()
            self._gate = None

    def fail_next(self, fault: Callable[[BatchRows], BaseException | None]) -> None:
        """The next commit asks ``fault`` first: an exception it returns is raised instead of committing."""
        self._faults.append(fault)

    def rows(self, table: str) -> list[Row]:
        return [dict(r) for r in self.tables[table].values()]

    # ------------------------------------------------------------------ the port
    async def load(self, model: CellModel, answers: int) -> Loaded:
        await asyncio.sleep(0)
        tables = {name: [SimpleNamespace(**row) for row in rows.values()] for name, rows in self.tables.items()}
        store.restore_model(model, tables)
        log = sorted(self.tables["cell_events"].values(), key=lambda r: r["counter"])
        recent = [((r["source"], r["event_id"]), _logged(r)) for r in log[-answers:]] if answers else []
        return Loaded(log[-1]["counter"] if log else 0, recent, len(log))

    async def commit(self, batch: BatchRows) -> None:
        await asyncio.sleep(0)
        if self._gate is not None:
            self.committing.set()
            await self._gate.wait()
            self.committing.clear()
        if self._faults:
            error = self._faults.pop(0)(batch)
            if error is not None:
                raise error
        staged = {name: dict(rows) for name, rows in self.tables.items()}
        ids = dict(self._next_id)
        for op in batch.ops:
            table = staged[op.table]
            if op.kind == "insert":
                for given in op.rows:
                    row = _stored(op.table, given)
                    if op.table in _AUTO:
                        ids[op.table] = ids.get(op.table, 0) + 1
                        row["id"] = ids[op.table]
                    key = _key_of(op.table, row)
                    if key in table:
                        raise BadRow(f"{op.table}: {key} exists already")
                    table[key] = row
                if op.table == "cell_events":
                    seen = {(r["source"], r["event_id"]) for r in table.values()}
                    if len(seen) != len(table):
                        raise BadRow("cell_events: (source, event_id) is not unique")
            elif op.kind == "upsert":
                for given in op.rows:
                    row = _stored(op.table, given)
                    table[_key_of(op.table, row)] = row
            elif op.kind == "delete":
                wanted = set(op.values)
                for key in [k for k, r in table.items() if r[op.column] in wanted]:
                    del table[key]
            else:
                table.clear()
        self.tables = staged
        self._next_id = ids
        self.commits += 1

    async def find_answers(self, keys: Collection[Key]) -> dict[Key, LoggedAnswer]:
        await asyncio.sleep(0)
        wanted = set(keys)
        return {
            (r["source"], r["event_id"]): _logged(r)
            for r in self.tables["cell_events"].values()
            if (r["source"], r["event_id"]) in wanted
        }

    async def fetch(self, job_ids: Collection[str], serials: Collection[str]) -> tuple[list[Job], list[Unit]]:
        await asyncio.sleep(0)
        units = [R.unit_from(SimpleNamespace(**r)) for r in self.tables["units"].values() if r["serial"] in serials]
        wanted = set(job_ids) | {u.job_id for u in units}
        jobs = [R.job_from(SimpleNamespace(**r)) for r in self.tables["jobs"].values() if r["id"] in wanted]
        return jobs, units

    def is_outage(self, exc: BaseException) -> bool:
        return isinstance(exc, StoreOutage)

    def close(self) -> None:
        return None


def _logged(row: Row) -> LoggedAnswer:
    return LoggedAnswer(
        counter=row["counter"],
        kind=row["kind"],
        args=copy.deepcopy(row["args"]),
        reason=row["reason"],
        message=row["message"],
        outputs=copy.deepcopy(row["answer"]),
        flags=copy.deepcopy(row["flags"]),
    )
