"""`outreach fhir export` against a real Bulk Data server on 127.0.0.1 (tests/fhir_bulk_server.py):
the async kick-off/poll pattern with Retry-After, SMART Backend Services tokens signed RS384 and
ES384 and verified by the server with PyJWT, a token that expires mid-export, a failed job's
OperationOutcome, and a download that breaks off and resumes with Range."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import Engine, select

from outreach.apps.cli import main
from outreach.errors import UserError
from outreach.ingest.fhir.auth import SmartAuth
from outreach.ingest.fhir.bulk import BulkClient
from outreach.store.db import session_scope
from outreach.store.models import Patient, PatientEvent
from tests.fhir_builders import immunization, patient
from tests.fhir_bulk_server import BulkServer, BulkState


def _pem(key: object, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _ndjson(*resources: dict[str, object]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in resources).encode()


@pytest.fixture(params=["rsa", "ec"])
def key(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, object]:
    private = (
        rsa.generate_private_key(65537, 2048)
        if request.param == "rsa"
        else ec.generate_private_key(ec.SECP384R1())
    )
    return _pem(private, tmp_path / "key.pem"), private.public_key()


@pytest.fixture
def state(key: tuple[Path, object]) -> BulkState:
    files = {
        "Patient": _ndjson(*(patient(f"p{i}", phone=f"(617) 555-01{i:02d}") for i in range(40))),
        "Immunization": _ndjson(*(immunization(f"p{i}", "140", "2025-10-01") for i in range(40))),
    }
    return BulkState(public_key=key[1], files=files)


@pytest.fixture
def server(state: BulkState) -> Iterator[BulkServer]:
    with BulkServer(state) as running:
        yield running


def _client(server: BulkServer, key_path: Path, waits: list[float]) -> BulkClient:
    session = requests.Session()
    auth = SmartAuth(server.url, "outreach-test", key_path, session)
    return BulkClient(server.url, auth=auth, session=session, sleep=waits.append)


def test_export_polls_as_told_downloads_with_the_token_and_imports(
    engine: Engine, server: BulkServer, state: BulkState, key: tuple[Path, object], tmp_path: Path
) -> None:
    state.throttle_first_kickoff = True
    state.polls_in_progress = 1  # the CLI waits for real: keep it short
    out = tmp_path / "export"
    result = CliRunner().invoke(
        main,
        [
            "fhir",
            "export",
            "--base-url",
            server.url,
            "--group",
            "g1",
            "--since",
            "2026-01-01T00:00:00Z",
            "--client-id",
            "outreach-test",
            "--key",
            str(key[0]),
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["inserted"], summary["events"]["inserted"]) == (40, 40)
    assert state.kickoff_query["_since"] == ["2026-01-01T00:00:00Z"]
    assert "Patient" in state.kickoff_query["_type"][0]
    assert "GET /Group/g1/$export 429" in state.log and "GET /Group/g1/$export 202" in state.log
    assert state.log.count("GET /status/job-1 202") == 1
    assert sorted(p.name for p in out.iterdir()) == ["Immunization-2.ndjson", "Patient-1.ndjson"]
    assert state.log[-1] == "DELETE /status/job-1 202"  # the server may delete the files now
    with session_scope(engine) as s:
        assert s.scalar(select(Patient).limit(1)) is not None
        assert len(s.scalars(select(PatientEvent)).all()) == 40


def test_retry_after_is_honored_and_an_expired_token_is_replaced(
    server: BulkServer, state: BulkState, key: tuple[Path, object], tmp_path: Path
) -> None:
    waits: list[float] = []
    client = _client(server, key[0], waits)
    status = client.kick_off(None, None)
    state.revoke_tokens()  # the token expires between kick-off and the first poll
    manifest = client.wait(status)
    assert [o["type"] for o in manifest["output"]] == ["Patient", "Immunization"]
    assert waits == [1.0, 1.0]  # the server's Retry-After, twice
    assert "GET /status/job-1 401" in state.log
    assert len(state.seen_jti) == 2  # a second assertion, each with its own jti


def test_a_failed_job_is_one_line_with_the_servers_reason(
    engine: Engine, server: BulkServer, state: BulkState, key: tuple[Path, object], tmp_path: Path
) -> None:
    state.fail_job = True
    result = CliRunner().invoke(
        main,
        [
            "fhir",
            "export",
            "--base-url",
            server.url,
            "--client-id",
            "outreach-test",
            "--key",
            str(key[0]),
            "--out",
            str(tmp_path / "out"),
            "--json",
        ],
    )
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "the export failed (HTTP 500: the export ran out of disk space)" in result.stderr


def test_an_interrupted_download_resumes_with_range(
    server: BulkServer, state: BulkState, key: tuple[Path, object], tmp_path: Path
) -> None:
    state.break_first_download = True
    state.polls_in_progress = 0
    # Large enough that whole chunks arrive before the break (the client writes what it got).
    state.files["Patient"] = _ndjson(*(patient(f"p{i}") for i in range(2000)))
    waits: list[float] = []
    done = _client(server, key[0], waits).export(tmp_path / "out")
    assert "GET /files/Patient broken" in state.log and "GET /files/Patient 206" in state.log
    assert [p.read_bytes() for p in done.files] == [state.files["Patient"], state.files["Immunization"]]
    assert not list((tmp_path / "out").glob("*.part"))


def test_a_wrong_key_is_refused_by_the_server_as_one_line(
    server: BulkServer, state: BulkState, tmp_path: Path
) -> None:
    other = _pem(rsa.generate_private_key(65537, 2048), tmp_path / "other.pem")
    with pytest.raises(UserError, match="no access token \\(the assertion did not verify\\)"):
        _client(server, other, []).kick_off(None, None)


def test_user_errors_exit_2(engine: Engine, tmp_path: Path) -> None:
    runner = CliRunner()
    bad_since = runner.invoke(
        main, ["fhir", "export", "--base-url", "http://127.0.0.1:9", "--since", "yesterday"]
    )
    assert bad_since.exit_code == 2 and "not an ISO instant" in bad_since.stderr
    half = runner.invoke(main, ["fhir", "export", "--base-url", "http://127.0.0.1:9", "--client-id", "x"])
    assert half.exit_code == 2 and "--client-id and --key go together" in half.stderr
    nobody = runner.invoke(
        main, ["fhir", "export", "--base-url", "http://127.0.0.1:9", "--out", str(tmp_path / "o")]
    )
    assert nobody.exit_code == 2 and "cannot reach the server" in nobody.stderr
    (tmp_path / "k.pem").write_text("not a key")
    bad_key = runner.invoke(
        main,
        [
            "fhir",
            "export",
            "--base-url",
            "http://127.0.0.1:9",
            "--client-id",
            "x",
            "--key",
            str(tmp_path / "k.pem"),
        ],
    )
    assert bad_key.exit_code == 2 and "not an unencrypted PEM private key" in bad_key.stderr


def test_a_token_about_to_expire_is_replaced_before_it_is_used(
    server: BulkServer, state: BulkState, key: tuple[Path, object]
) -> None:
    now = [1000.0]
    session = requests.Session()
    auth = SmartAuth(server.url, "outreach-test", key[0], session, clock=lambda: now[0])
    first = auth.header()
    now[0] += 200.0  # 100 s left of 300: still good
    assert auth.header() == first
    now[0] += 80.0  # 20 s left: replaced before a request could meet a 401
    assert auth.header() != first
    assert len(state.seen_jti) == 2 and not [line for line in state.log if " 401" in line]
