"""`outreach web` over real HTTP (uvicorn on a loopback port): webhook URLs as operators paste them
and Twilio signs them, and what a database without tables answers.

Requests go out through http.client so the path and the Host header arrive exactly as written
(no client-side normalisation of `//` or of the host's letter case).
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
import uvicorn
from sqlalchemy import Engine, text
from twilio.request_validator import RequestValidator

from outreach.apps.web.app import create_app
from outreach.campaigns import CampaignFile, parse_campaign
from outreach.config import Settings, get_settings
from outreach.store import db as dbmod
from tests.test_web import (
    CAMPAIGN_YAML,
    NOW,
    PHONE,
    TOKEN,
    inbound_form,
    opted_out,
    seed_enrollment,
    stored,
)

PUBLIC_HOST = "outreach.example.org"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


class LiveWeb:
    """The web app served by uvicorn from a thread, on a free loopback port."""

    def __init__(self, app: object) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")  # type: ignore[arg-type]
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])), daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read().decode())
        finally:
            conn.close()

    def post(self, path: str, form: dict[str, str], *, signed_url: str, host: str = PUBLIC_HOST) -> Answer:
        """POST `form` to `path` with Host `host`, signed (Twilio's validator) for `signed_url`."""
        headers = {
            "Host": host,
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(signed_url, form),
        }
        return self.request("POST", path, urlencode(form).encode(), headers)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


@pytest.fixture
def web_settings(engine: Engine) -> Settings:
    return get_settings().model_copy(
        update={
            "twilio_auth_token": TOKEN,
            "public_url": f"https://{PUBLIC_HOST}",
            "twilio_from_number": "+16175550100",
        }
    )


@pytest.fixture
def serve(
    engine: Engine, web_settings: Settings, campaigns: dict[str, CampaignFile]
) -> Iterator[Callable[..., LiveWeb]]:
    servers: list[LiveWeb] = []

    def start(settings: Settings | None = None, db: Engine | None = None) -> LiveWeb:
        app = create_app(
            settings or web_settings, engine=db or engine, campaigns=campaigns, clock=lambda: NOW
        )
        servers.append(LiveWeb(app))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def campaigns(web_settings: Settings) -> dict[str, CampaignFile]:
    campaign = parse_campaign(CAMPAIGN_YAML, settings=web_settings)
    return {campaign.id: campaign}


# --- webhook URLs as Twilio signs them --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "host"),
    [
        pytest.param("/twilio/inbound", PUBLIC_HOST, id="as configured"),
        pytest.param("/twilio/inbound/", PUBLIC_HOST, id="trailing slash"),
        pytest.param("//twilio/inbound", PUBLIC_HOST, id="public URL pasted with its slash"),
        pytest.param("/twilio//inbound?x=1", PUBLIC_HOST, id="doubled inside, with a query"),
        pytest.param("/twilio/inbound", "Outreach.Example.ORG", id="host in other letter case"),
        pytest.param("/twilio/inbound/", "OUTREACH.example.org:443", id="case, port and slash"),
    ],
)
def test_a_webhook_url_is_served_where_it_was_sent_and_checked_as_twilio_signed_it(
    serve: Callable[..., LiveWeb], engine: Engine, path: str, host: str
) -> None:
    web = serve()

    answer = web.post(path, inbound_form("STOP"), signed_url=f"https://{host}{path}", host=host)

    assert (answer.status, "location" in {k.lower() for k in answer.headers}) == (200, False)
    assert "You are unsubscribed" in answer.body
    assert stored(engine) == 1 and opted_out(engine)


def test_a_status_callback_to_a_doubled_slash_is_recorded(
    serve: Callable[..., LiveWeb], engine: Engine
) -> None:
    seed_enrollment(engine)
    form = {"MessageSid": "SM" + "9" * 32, "MessageStatus": "failed", "ErrorCode": "21610", "To": PHONE}

    answer = serve().post("//twilio/status/", form, signed_url=f"https://{PUBLIC_HOST}//twilio/status/")

    assert answer.status == 204 and opted_out(engine)


@pytest.mark.parametrize(
    ("path", "signed_url", "host"),
    [
        pytest.param(
            "/twilio/inbound/", f"https://{PUBLIC_HOST}/twilio/inbound", PUBLIC_HOST, id="slash not signed"
        ),
        pytest.param(
            "//twilio/inbound", f"https://{PUBLIC_HOST}/twilio/inbound", PUBLIC_HOST, id="path not signed"
        ),
        pytest.param(
            "/twilio/inbound", f"https://{PUBLIC_HOST}/twilio/status", PUBLIC_HOST, id="other webhook"
        ),
        pytest.param(
            "/twilio/inbound",
            "https://attacker.example.com/twilio/inbound",
            "attacker.example.com",
            id="other host",
        ),
        pytest.param(
            "/twilio/inbound", f"http://{PUBLIC_HOST}/twilio/inbound", PUBLIC_HOST, id="other scheme"
        ),
        pytest.param(
            "/twilio/inbound/",
            "https://Attacker.example.com/twilio/inbound/",
            "Attacker.example.com",
            id="other host, slash",
        ),
    ],
)
def test_a_signature_for_any_other_url_is_refused_and_changes_nothing(
    serve: Callable[..., LiveWeb], engine: Engine, path: str, signed_url: str, host: str
) -> None:
    answer = serve().post(path, inbound_form("STOP"), signed_url=signed_url, host=host)

    assert answer.status == 403
    assert "X-Twilio-Signature" in answer.body
    assert stored(engine) == 0 and not opted_out(engine)


def test_a_path_prefix_in_the_public_url_is_signed_when_the_proxy_strips_it(
    serve: Callable[..., LiveWeb], engine: Engine, web_settings: Settings
) -> None:
    """Twilio calls https://host/outreach/twilio/inbound; the proxy forwards /twilio/inbound."""
    web = serve(web_settings.model_copy(update={"public_url": f"https://{PUBLIC_HOST}/outreach/"}))

    answer = web.post(
        "/twilio/inbound", inbound_form("STOP"), signed_url=f"https://{PUBLIC_HOST}/outreach/twilio/inbound"
    )
    unprefixed = web.post(
        "/twilio/inbound",
        inbound_form("HELP", sid="SM" + "4" * 32),
        signed_url=f"https://{PUBLIC_HOST}/twilio/inbound",
    )

    assert (answer.status, unprefixed.status) == (200, 403)
    assert stored(engine) == 1


def test_health_and_other_routes_take_a_trailing_slash_without_a_redirect(
    serve: Callable[..., LiveWeb],
) -> None:
    answer = serve().request("GET", "/healthz/")

    assert answer.status == 200 and '"status":"ok"' in answer.body.replace(" ", "")


# --- a database without tables ----------------------------------------------------------------------


@pytest.fixture
def bare_engine(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A reachable database on the same server with no tables at all (never `db upgrade`d)."""
    if database_url.startswith("sqlite"):
        engine = dbmod.engine_for(f"sqlite:///{tmp_path_factory.mktemp('bare') / 'bare.db'}")
        yield engine
        engine.dispose()
        return
    base = database_url.split("?")[0]
    schema = f"bare_{uuid.uuid4().hex[:12]}"
    admin = dbmod.engine_for(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine = dbmod.engine_for(f"{base}?options=-csearch_path%3D{schema}")
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def test_on_a_database_without_tables_health_is_down_and_webhooks_a_clear_503(
    serve: Callable[..., LiveWeb], bare_engine: Engine
) -> None:
    web = serve(db=bare_engine)

    health = web.request("GET", "/healthz")
    inbound = web.post(
        "/twilio/inbound", inbound_form("STOP"), signed_url=f"https://{PUBLIC_HOST}/twilio/inbound"
    )
    status = web.post(
        "/twilio/status",
        {"MessageSid": "SM" + "9" * 32, "MessageStatus": "delivered"},
        signed_url=f"https://{PUBLIC_HOST}/twilio/status",
    )

    assert health.status == 503
    assert '"status":"down"' in health.body
    assert "schema missing: run `outreach db upgrade`" in health.body
    detail = '{"detail":"schema missing: run `outreach db upgrade`"}'
    assert (inbound.status, inbound.body) == (503, detail)
    assert (status.status, status.body) == (503, detail)


def test_a_schema_behind_the_code_is_named_with_both_revisions(
    serve: Callable[..., LiveWeb], bare_engine: Engine
) -> None:
    with bare_engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('0000')"))

    health = serve(db=bare_engine).request("GET", "/healthz")

    assert health.status == 503
    assert f"schema at revision 0000, this code needs {dbmod.head_revision()}" in health.body


def test_a_forged_webhook_on_a_database_without_tables_is_still_403(
    serve: Callable[..., LiveWeb], bare_engine: Engine
) -> None:
    answer = serve(db=bare_engine).post(
        "/twilio/inbound", inbound_form("STOP"), signed_url="https://attacker.example.com/twilio/inbound"
    )

    assert answer.status == 403
