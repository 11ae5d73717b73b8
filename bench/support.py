"""What the benchmark scripts share: a private PostgreSQL schema and a free loopback port.

Imported by the scripts as a sibling module (`python bench/X.py` puts bench/ first on sys.path).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from outreach.store import db as dbmod


@contextmanager
def postgres_schema(base: str, *, keep: bool = False) -> Iterator[tuple[Engine, str]]:
    """A schema of the run's own on the server at `base`, dropped at the end even when the run
    fails (unless `keep`: then it is left for a later run to reuse, and dropping it is the
    caller's job); the URL carries its search_path, so other processes given it (workers, the
    web server) use it too."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = dbmod.engine_for(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options=-csearch_path%3D{schema}"
    engine = dbmod.engine_for(url)
    try:
        yield engine, url
    finally:
        engine.dispose()
        if not keep:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
