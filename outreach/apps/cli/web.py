"""`outreach web`: the Twilio webhooks and /healthz (outreach/apps/web/), served by uvicorn."""

from __future__ import annotations

from typing import Any

import click

from outreach.apps.cli.options import port_option


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@port_option(8000)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes; webhooks are database-bound, so about one per core.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log every request (uvicorn's access log). Refused webhooks and errors are logged either way; "
    "off saves a line per request (~0.1 ms of CPU each).",
)
def web_command(host: str, port: int, workers: int, access_log: bool) -> None:
    """Twilio webhooks (inbound replies, status callbacks) and /healthz, served by uvicorn."""
    import uvicorn

    app = web_app()  # with several workers too: a bad setting stops here, as one line
    # uvloop and httptools (uvicorn[standard]) are picked automatically: the event loop and HTTP
    # parser in C, where the pure-Python ones cost a webhook more CPU than its own work.
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "info", "access_log": access_log}
    if workers == 1:
        uvicorn.run(app, **options)
    else:
        # Each worker process builds its own app (and engine) from this factory.
        uvicorn.run(f"{__name__}:web_app", factory=True, workers=workers, **options)


def web_app() -> Any:
    """The app `outreach web` serves: webhooks dispatching answers to the Celery workers."""
    import logging

    from outreach.apps.web.app import create_app
    from workers.app import check_broker
    from workers.tasks import dispatch

    app = create_app(dispatch=dispatch, broker_check=check_broker)
    # Runs in every worker process: the app's own warnings (refused webhooks, with the reason) and
    # errors reach the log next to uvicorn's lines; its per-request INFO lines stay off. A no-op
    # where logging is configured already.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:  %(name)s: %(message)s")
    return app
