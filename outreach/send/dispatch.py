"""The one seam between planning and the workers.

The engine never imports Celery: the entry point that runs a pass (the Celery task, the CLI, the
web app, the demo) passes a `Dispatch` down, and the scheduler and the sweeper call it with the
outbox ids that are due now. It carries ids only, never a body or a number (DESIGN §7.5, §7.7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Dispatch = Callable[[Sequence[int]], None]
"""Hands outbox ids to the workers; `None` where a caller plans without sending (`--no-dispatch`)."""
