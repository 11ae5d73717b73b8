"""Roster upload benchmark: a large roster CSV posted to `/app/roster` of `outreach web`, on PostgreSQL,
and its background import followed on the upload's page until it is done.

    .venv/bin/python bench/roster_upload.py                  # 1,000,000 rows
    .venv/bin/python bench/roster_upload.py --rows 100000
    .venv/bin/python bench/roster_upload.py --bad-every 2     # half the rows rejected

Gets a fresh PostgreSQL schema (dropped at the end, even on failure), writes a seeded roster with
samples/generate.py's streaming writer into a temporary folder and appends a few deliberately bad
rows (a repeated mrn, a bad birth date, a bad phone, no first name, a misshapen record), so the
page's rejected count is checked too (`--bad-every K` also breaks every K-th generated row's birth
date, for a roster with many rejects). It then starts `outreach web` as an operator does, adds a
coordinator with `outreach users add --json`, signs in over HTTP as a browser does (the sign-in
form with its CSRF token, then the TOTP code computed from the secret the enrolment page shows),
and posts the file to `/app/roster` as a streamed multipart body (httpx reads the file in chunks).
The POST only spools the file and answers 303 to the upload's page; the bench then polls the page's
status fragment (as the page does, every `--poll` seconds) until the import is done, and reports the
request's time and the import's time apart (the latter also from the upload's row: started_at to
finished_at), with the rows-read figures the fragment showed on the way.

From the POST until the import is done, the RSS of the web process and of every process under it (the import's
helper processes) is sampled every `--interval` seconds from /proc/<pid>/status (VmRSS, and
VmHWM at the end). The issue #15 target is a web process under 300 MB RSS for 1,000,000 rows;
reported, not asserted. Prints one JSON object and, last, a one-line summary.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp
from sqlalchemy import Engine, func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from support import free_port, postgres_schema  # noqa: E402
from webhooks import DEFAULT_BROKER, _count_errors, _server, _server_env  # noqa: E402

from outreach.store import db as dbmod  # noqa: E402
from outreach.store.models import AuditEntry, Patient, RosterUpload  # noqa: E402
from samples.generate import ROSTER_HEADER, mrn_for, roster_rows, write_roster  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGET_MB = 300.0
BROWSER_WAIT_S = 60.0  # uvicorn behind a proxy: nginx's proxy_read_timeout, many load balancers
EMAIL = "bench.coordinator@example.org"
PASSWORD = "bench upload password 1"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET = re.compile(r'data-testid="totp-secret">([^<]+)<')
COUNT = re.compile(r'data-testid="roster-(accepted|rejected|inserted|updated)">(\d+)<')
STATE = re.compile(r'data-testid="roster-status" data-status="(\w+)"')
ROWS_READ = re.compile(r"([\d,]+) rows read so far")
STUCK_S = 600.0  # an import not done by then is reported as an error
# Appended after the generated rows; each is rejected for one reason (the 9 roster columns).
BAD_ROWS = (
    f"{mrn_for(0)},Ana,Repeat,1960-01-01,female,(617) 555-0100,en,,02115",  # mrn on line 2 already
    "BAD0000001,Ana,Date,1960-13-45,female,(617) 555-0101,en,,02115",
    "BAD0000002,Ana,Phone,1960-01-01,female,not a phone,en,,02115",
    "BAD0000003,,Nameless,1960-01-01,female,(617) 555-0102,en,,02115",
    "BAD0000004,Ana,Short",  # misshapen: 3 fields of 9
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_PG, help="PostgreSQL server (a schema is made)")
    parser.add_argument("--broker-url", default=DEFAULT_BROKER, help="for /healthz only; nothing is queued")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the file, bad ones included")
    parser.add_argument(
        "--bad-every",
        type=int,
        metavar="K",
        help="also break the birth date of every K-th generated row (a roster with many rejects)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.1, help="RSS sampling period, seconds")
    parser.add_argument("--poll", type=float, default=0.5, help="status polling period, seconds")
    parser.add_argument("--keep-log", type=Path, metavar="FILE", help="copy the server's log here")
    args = parser.parse_args(argv)
    if args.rows <= len(BAD_ROWS):
        parser.error(f"--rows must be more than the {len(BAD_ROWS)} bad rows")
    with postgres_schema(args.database_url) as (engine, url):
        dbmod.upgrade(engine)
        figures = run(engine, url, args)
    print(json.dumps(figures, indent=2))
    print(summary(figures))
    return 0 if passed(figures) else 1


def run(engine: Engine, url: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        roster = Path(tmp) / "roster.csv"
        started = time.perf_counter()
        write_file(roster, args.rows - len(BAD_ROWS), args.seed, args.bad_every)
        with roster.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(BAD_ROWS) + "\n")
        generate_s = time.perf_counter() - started
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        env = _server_env(url, public, args.broker_url)
        log_path = Path(tmp) / "web.log"
        with _server(1, port, env, log_path, ["--no-access-log"]) as pid:
            secret = add_coordinator(env)
            with httpx.Client(base_url=public, timeout=httpx.Timeout(30.0)) as client:
                csrf = sign_in(client, secret)
                load_before = os.getloadavg()
                idle = _status(pid) or {}
                hwm_reset = _reset_hwm(pid)
                sampler = Sampler(pid, args.interval)
                sampler.start()
                try:
                    upload = post_roster(client, roster, csrf)
                    if upload.location is not None:
                        follow(client, upload, args.poll)
                finally:
                    sampler.stop()
                load_after = os.getloadavg()
            server_errors = _count_errors(log_path)
        if args.keep_log:
            args.keep_log.write_bytes(log_path.read_bytes())
        size = roster.stat().st_size
    return {
        "database": "postgresql",
        "cpus": os.cpu_count(),
        "rows": args.rows,
        "file_bytes": size,
        "file_mb": round(size / 2**20, 1),
        "generate_s": round(generate_s, 1),
        **upload.figures(args.rows),
        "rss": {
            "web_idle_rss_mb": _mb(idle.get("VmRSS", 0)),  # signed in, before the upload
            # The high-water mark since it started: signing in hashes a password with argon2 (64 MB).
            "web_idle_vm_hwm_mb": _mb(idle.get("VmHWM", 0)),
            "web_vm_hwm_reset_before_upload": hwm_reset,
            **sampler.figures(),
        },
        "bad_every": args.bad_every,
        "counts": upload.counts,
        "expected": expected(args.rows, args.bad_every),
        "database_check": database_check(engine, expected(args.rows, args.bad_every)["accepted"]),
        "upload_row": upload_row(engine),
        "server_log_errors": server_errors,
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "targets": {"peak_rss_mb": TARGET_MB},
    }


def add_coordinator(env: dict[str, str]) -> str:
    """`outreach users add … --json` as an administrator runs it; returns the TOTP secret."""
    outreach = Path(sys.executable).with_name("outreach")
    done = subprocess.run(
        [str(outreach), "users", "add", EMAIL, "--role", "coordinator", "--password-stdin", "--json"],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"outreach users add failed ({done.returncode}): {done.stderr.strip()}")
    secret: str = pyotp.parse_uri(json.loads(done.stdout)["totp_uri"]).secret
    return secret


def _csrf(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    if found is None:
        raise SystemExit(f"no CSRF token on {page.url} ({page.status_code})")
    return found.group(1)


def sign_in(client: httpx.Client, uri_secret: str) -> str:
    """The sign-in form, then the enrolment page's code; returns the session's CSRF token."""
    form = client.get("/app/login")
    page = client.post(
        "/app/login",
        data={"email": EMAIL, "password": PASSWORD, "csrf_token": _csrf(form)},
        follow_redirects=True,
    )
    shown = SECRET.search(page.text)
    if not str(page.url).endswith("/app/mfa") or shown is None:
        raise SystemExit(f"sign-in did not reach the enrolment page: {page.url} {page.status_code}")
    secret = shown.group(1).replace(" ", "")
    if secret != uri_secret:
        raise SystemExit("the enrolment page shows another secret than `outreach users add` printed")
    done = client.post(
        "/app/mfa", data={"code": pyotp.TOTP(secret).now(), "csrf_token": _csrf(page)}, follow_redirects=True
    )
    if not str(done.url).endswith("/app/inbox"):
        raise SystemExit(f"the TOTP code was refused: {done.url} {done.status_code}")
    return _csrf(client.get("/app/roster"))


class _Watched(io.FileIO):
    """The roster file as httpx streams it into the multipart body: notes when the last byte left."""

    last_read: float | None = None

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if not chunk and self.last_read is None:
            self.last_read = time.perf_counter()
        return chunk


@dataclass
class Upload:
    status: int  # of the POST: 303 to the upload's page
    seconds: float  # the POST: request sent to response read
    upload_seconds: float | None  # request sent to the file's last byte read by httpx
    location: str | None
    response_bytes: int
    counts: dict[str, int] = field(default_factory=dict)
    import_seconds: float | None = None  # the POST's answer to the first poll that saw it done
    final_status: str | None = None
    polls: int = 0
    rows_seen: list[tuple[float, int]] = field(default_factory=list)  # (s since the answer, rows read)
    error: str | None = None

    def figures(self, rows: int) -> dict[str, Any]:
        total = self.seconds + self.import_seconds if self.import_seconds is not None else None
        return {
            "http_status": self.status,
            "request_s": round(self.seconds, 2),
            "upload_body_s": round(self.upload_seconds, 2) if self.upload_seconds is not None else None,
            "import_s_polled": round(self.import_seconds, 1) if self.import_seconds is not None else None,
            "request_and_import_s": round(total, 1) if total is not None else None,
            "rows_per_s": round(rows / total) if total else None,
            "request_over_proxy_timeout": self.seconds > BROWSER_WAIT_S,
            "final_status": self.final_status,
            "polls": self.polls,
            "rows_read_seen": [(round(t, 1), n) for t, n in self.rows_seen],
            "response_bytes": self.response_bytes,
            "error": self.error,
        }


def post_roster(client: httpx.Client, roster: Path, csrf: str) -> Upload:
    """The form as a browser without script posts it (multipart, the file streamed): the answer
    is a 303 to the upload's page; no time limit, to measure."""
    with _Watched(roster, "r") as handle:
        started = time.perf_counter()
        response = client.post(
            "/app/roster",
            data={"csrf_token": csrf, "kind": "patients"},
            files={"file": ("roster.csv", handle, "text/csv")},
            timeout=httpx.Timeout(None),
            follow_redirects=False,
        )
        seconds = time.perf_counter() - started
        sent = handle.last_read - started if handle.last_read is not None else None
    location = response.headers.get("location") if response.status_code == 303 else None
    upload = Upload(response.status_code, seconds, sent, location, len(response.content))
    if location is None:
        flat = " ".join(response.text.split())
        upload.error = f"{response.status_code}: {flat[:300]}"
    return upload


def follow(client: httpx.Client, upload: Upload, every: float) -> None:
    """Poll the upload's status fragment until the import is done or failed, then read the counts
    off its page; notes the rows read that each poll showed."""
    assert upload.location is not None
    started = time.perf_counter()
    while True:
        fragment = client.get(f"{upload.location}/status")
        upload.polls += 1
        elapsed = time.perf_counter() - started
        state = STATE.search(fragment.text)
        if fragment.status_code != 200 or state is None:
            upload.error = f"status {fragment.status_code}: {' '.join(fragment.text.split())[:300]}"
            return
        read = ROWS_READ.search(fragment.text)
        if read is not None:
            upload.rows_seen.append((elapsed, int(read.group(1).replace(",", ""))))
        if state.group(1) in ("done", "failed"):
            upload.import_seconds = elapsed
            upload.final_status = state.group(1)
            break
        if elapsed > STUCK_S:
            upload.error = f"not done after {STUCK_S:g} s (status {state.group(1)})"
            return
        time.sleep(every)
    page = client.get(upload.location)
    upload.counts = {name: int(value) for name, value in COUNT.findall(page.text)}
    if upload.final_status != "done" or len(upload.counts) != 4:
        upload.error = f"{upload.final_status}: {' '.join(page.text.split())[-300:]}"


def write_file(path: Path, rows: int, seed: int, bad_every: int | None) -> None:
    """The seeded roster (samples/generate.py streams it); with `bad_every`, every K-th row's birth
    date is made impossible, so that row is rejected."""
    if not bad_every:
        write_roster(path, rows, seed)
        return
    at = ROSTER_HEADER.index("birth_date")
    broken = (
        (*row[:at], "1960-13-45", *row[at + 1 :]) if i % bad_every == bad_every - 1 else row
        for i, row in enumerate(roster_rows(rows, seed))
    )
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(ROSTER_HEADER)
        writer.writerows(broken)


def expected(rows: int, bad_every: int | None = None) -> dict[str, int]:
    generated = rows - len(BAD_ROWS)
    bad = len(BAD_ROWS) + (generated // bad_every if bad_every else 0)
    return {"accepted": rows - bad, "rejected": bad, "inserted": rows - bad, "updated": 0}


def database_check(engine: Engine, accepted: int) -> dict[str, Any]:
    with engine.connect() as conn:
        patients = conn.scalar(select(func.count()).select_from(Patient))
        audited = list(conn.scalars(select(AuditEntry.detail).where(AuditEntry.action == "roster_upload")))
    return {
        "patients": patients,
        "patients_expected": accepted,
        "roster_upload_audited": len(audited) == 1,
        "audit_detail": audited[0] if audited else None,
    }


def upload_row(engine: Engine) -> dict[str, Any]:
    """The upload's row: its status and the import's own time (started_at to finished_at)."""
    with engine.connect() as conn:
        row = conn.execute(select(RosterUpload)).one_or_none()
    if row is None:
        return {"found": False}
    took = row.finished_at - row.started_at if row.finished_at and row.started_at else None
    return {
        "found": True,
        "status": row.status,
        "rows_read": row.rows_read,
        "import_s": round(took.total_seconds(), 1) if took is not None else None,
        "message": row.message,
    }


@dataclass
class _Proc:
    name: str
    peak_rss_kb: int = 0
    hwm_kb: int = 0
    first_seen_s: float = 0.0


@dataclass
class Sampler:
    """RSS of a process and its descendants, read from /proc every `interval` seconds in a thread."""

    pid: int
    interval: float
    procs: dict[int, _Proc] = field(default_factory=dict)
    peak_total_kb: int = 0
    peak_pss_kb: int = 0
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (s, web kB, others kB)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()  # the web process's VmHWM as the request ends

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        now = time.perf_counter() - self._started
        web = others = 0
        for pid in _tree(self.pid):
            status = _status(pid)
            if status is None:
                continue
            proc = self.procs.setdefault(pid, _Proc(status.get("Name", "?"), first_seen_s=now))
            rss, hwm = status.get("VmRSS", 0), status.get("VmHWM", 0)
            proc.peak_rss_kb = max(proc.peak_rss_kb, rss)
            proc.hwm_kb = max(proc.hwm_kb, hwm)
            if pid == self.pid:
                web = rss
            else:
                others += rss
        self.peak_total_kb = max(self.peak_total_kb, web + others)
        self.samples += 1
        if not self.timeline or now - self.timeline[-1][0] >= 1.0:
            self.timeline.append((now, web, others))
            # Once a second (smaps_rollup walks every mapping): the tree's proportional set size.
            self.peak_pss_kb = max(self.peak_pss_kb, sum(_pss(pid) for pid in _tree(self.pid)))

    def figures(self) -> dict[str, Any]:
        web = self.procs.get(self.pid, _Proc("?"))
        children: list[dict[str, Any]] = [
            {
                "pid": pid,
                "name": proc.name,
                "peak_rss_mb": _mb(proc.peak_rss_kb),
                "vm_hwm_mb": _mb(proc.hwm_kb),
                "seen_from_s": round(proc.first_seen_s, 1),
            }
            for pid, proc in self.procs.items()
            if pid != self.pid
        ]
        return {
            "web_peak_rss_mb": _mb(web.peak_rss_kb),
            "web_vm_hwm_mb": _mb(web.hwm_kb),  # the kernel's high-water mark: catches a spike between samples
            "children": children,
            "children_peak_rss_mb": _mb(
                max((p.peak_rss_kb for i, p in self.procs.items() if i != self.pid), default=0)
            ),
            # Children are forked from the web process: their RSS counts the pages they still share with it.
            "tree_peak_rss_sum_mb": _mb(self.peak_total_kb),
            # Proportional set size summed over the tree (shared pages split between the processes
            # sharing them), sampled once a second: what the web process and its helpers take together.
            "tree_peak_pss_sum_mb": _mb(self.peak_pss_kb),
            "samples": self.samples,
            "timeline_s_web_children_mb": [(round(t), _mb(w), _mb(o)) for t, w, o in self.timeline],
        }


def _tree(root: int) -> list[int]:
    """`root` and its descendants (/proc/<pid>/task/<tid>/children)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue  # exited meanwhile
    return found


def _status(pid: int) -> dict[str, Any] | None:
    """Name, VmRSS and VmHWM (kB) of a process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == "Name":
            values[key] = rest.strip()
        elif key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def _reset_hwm(pid: int) -> bool:
    """Start the process's VmHWM afresh (Linux: 5 to /proc/<pid>/clear_refs), so the mark at the end
    is the upload's own and not the sign-in's password hash; False where the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _pss(pid: int) -> int:
    """A process's proportional set size in kB (/proc/<pid>/smaps_rollup), 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


def passed(figures: dict[str, Any]) -> bool:
    rss = figures["rss"]
    check = figures["database_check"]
    return bool(
        figures["http_status"] == 303
        and figures["final_status"] == "done"
        and not figures["request_over_proxy_timeout"]
        and figures["counts"] == figures["expected"]
        and check["patients"] == check["patients_expected"]
        and check["roster_upload_audited"]
        and max(rss["web_peak_rss_mb"], rss["web_vm_hwm_mb"], rss["children_peak_rss_mb"]) < TARGET_MB
        and figures["server_log_errors"] == 0
    )


def summary(figures: dict[str, Any]) -> str:
    rss = figures["rss"]
    counts = figures["counts"]
    peak = max(rss["web_peak_rss_mb"], rss["web_vm_hwm_mb"])
    wait = " (longer than a proxy's 60 s)" if figures["request_over_proxy_timeout"] else ""
    right = "as expected" if counts == figures["expected"] else f"expected {figures['expected']}"
    return (
        f"roster upload on postgresql: {figures['rows']:,} rows ({figures['file_mb']} MB): request "
        f"{figures['request_s']} s{wait} (body sent in {figures['upload_body_s']} s), then the import "
        f"{figures['import_s_polled']} s polled ({figures['upload_row'].get('import_s')} s on its row, "
        f"{figures['final_status']}) = {figures['rows_per_s'] or 0:,} rows/s overall; web process peak RSS "
        f"{peak} MB, largest child {rss['children_peak_rss_mb']} MB (target < {TARGET_MB:g} MB); "
        f"page counts {counts} {right}; load {figures['load_average_1m']['before']}->"
        f"{figures['load_average_1m']['after']} [{'ok' if passed(figures) else 'MISSED'}]"
    )


if __name__ == "__main__":
    sys.exit(main())
