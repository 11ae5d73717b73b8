"""Checking a large roster in helper processes while this one reads and loads.

Checking rows (phone numbers above all) is most of an import's CPU; a large roster is checked in
other processes while this one reads the file and, on PostgreSQL, a thread of it loads the
checked batches, so reading, checking and loading overlap. What crosses between processes is
kept cheap to pickle (patients.Batch, patients.Checked).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from outreach.ingest.load import PatientWriter
from outreach.ingest.patients import Batch, Checked, PatientCheck

PARALLEL_FROM_BYTES = 4 * 1024 * 1024
_IN_FLIGHT = 4  # batches between reading and loading: enough to keep every helper busy, bounded memory

_HELPER_CHECK: PatientCheck | None = None  # the checker of a helper process


def _start_helper(check: PatientCheck) -> None:
    global _HELPER_CHECK
    _HELPER_CHECK = check


def _check_in_helper(batch: Batch) -> Checked:
    assert _HELPER_CHECK is not None
    return _HELPER_CHECK.check(batch)


def helper_pool(path: Path, check: PatientCheck) -> ProcessPoolExecutor | None:
    """Helper processes for a large file on a machine with cores to spare; None otherwise."""
    cores = os.cpu_count() or 1
    if cores < 2 or path.stat().st_size < PARALLEL_FROM_BYTES:
        return None
    # fork, not spawn: spawn would re-import the caller's __main__ (impossible for `python -`, slow
    # for the CLI). One core stays with this process (reading, loading) and the database; on 2
    # cores one helper beats two.
    return ProcessPoolExecutor(
        max_workers=min(cores - 1, 4),
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_helper,
        initargs=(check,),
    )


def checked_in_order(batches: Iterator[Batch], pool: ProcessPoolExecutor) -> Iterator[Checked]:
    """Each batch checked by the pool, in file order, a few batches in flight."""
    in_flight: deque[Future[Checked]] = deque()
    for batch in batches:
        in_flight.append(pool.submit(_check_in_helper, batch))
        if len(in_flight) > _IN_FLIGHT:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


def load_in_parallel(batches: Iterator[Batch], pool: ProcessPoolExecutor, writer: PatientWriter) -> None:
    """Read, check and load at once: the pool checks batches while one thread loads each checked
    batch in file order (the database works in its own process, so the thread mostly waits and
    leaves this one free to read). At most _IN_FLIGHT batches are past reading and not loaded."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="roster-load") as loader:
        pending: deque[Future[None]] = deque()
        try:
            for batch in batches:
                checked = pool.submit(_check_in_helper, batch)
                pending.append(loader.submit(_load_when_checked, writer, checked))
                if len(pending) > _IN_FLIGHT:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _load_when_checked(writer: PatientWriter, checked: Future[Checked]) -> None:
    # Once a batch fails nothing after it loads, as when batches load one after the other; the
    # import then raises the first failure.
    if writer.failed:
        raise RuntimeError("not loaded: an earlier batch failed")
    try:
        writer.write(checked.result())
    except BaseException:
        writer.failed = True
        raise
