"""The FHIR Bulk Data `$export` client: kick-off, status polling, download (Bulk Data Access IG).

An export is asynchronous and long: the server accepts the request (202 and a status URL), works
for minutes or hours, and answers the status URL with 202 (and how long to wait, `Retry-After`)
until it can list the files. So the client waits as told, backs off when told nothing or "too many
requests" (429) or "unavailable" (503), stops with the server's own words when the job failed (an
OperationOutcome), and downloads each file resuming where a broken connection left it (Range),
because a multi-gigabyte file restarted from zero may never finish.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from outreach.errors import UserError
from outreach.ingest.fhir.auth import SmartAuth, http_request, json_body

TYPES = ("Patient", "Procedure", "Immunization", "Observation", "DiagnosticReport", "Condition")
_RETRY = frozenset({429, 503})
_MAX_WAIT = 300.0  # seconds: the longest single wait, whatever Retry-After says
_ATTEMPTS = 8  # tries for one request that keeps being refused (429/503) or one download
_CHUNK = 64 * 1024  # what a broken connection can cost: the chunk being read is fetched again


@dataclass
class Export:
    """What an export fetched: the files written and the server's own notes (its error files)."""

    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class BulkClient:
    """One server: `export()` runs kick-off, polling and downloads. `sleep` is the wait between
    polls, passed in so a caller (or a test) decides how time passes."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: SmartAuth | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.session = session or requests.Session()
        self.sleep = sleep
        self.on_progress = on_progress

    def export(self, out: Path, *, group: str | None = None, since: str | None = None) -> Export:
        status_url = self.kick_off(group, since)
        manifest = self.wait(status_url)
        done = self.download(manifest, out)
        self.release(status_url)
        return done

    def release(self, status_url: str) -> None:
        """Tell the server the files are fetched (DELETE on the status URL, as the IG suggests) so
        it can delete them; a server that refuses only keeps them longer."""
        with contextlib.suppress(UserError):
            self._call("DELETE", status_url).close()

    def kick_off(self, group: str | None, since: str | None) -> str:
        """Start the export; the status URL the server answers with (Content-Location)."""
        target = f"Group/{group}" if group else "Patient"
        url = f"{self.base_url}/{target}/$export"
        params = {"_type": ",".join(TYPES)} | ({"_since": since} if since else {})
        headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
        response = self._call("GET", url, headers=headers, params=params)
        location = response.headers.get("Content-Location")
        if response.status_code != 202 or not location:
            raise UserError(f"{url}: the export was not started ({_outcome(response)})")
        return location

    def wait(self, status_url: str) -> dict[str, Any]:
        """Poll until the manifest; a failed job is one line with the server's diagnostics."""
        delay = 1.0
        while True:
            response = self._call("GET", status_url, headers={"Accept": "application/json"})
            if response.status_code == 200:
                return json_body(response)
            if response.status_code != 202:
                raise UserError(
                    f"the export failed ({_outcome(response)}); see the server's log, then run it again"
                )
            if self.on_progress is not None and response.headers.get("X-Progress"):
                self.on_progress(response.headers["X-Progress"])
            wait = retry_after(response)
            self.sleep(min(wait if wait is not None else delay, _MAX_WAIT))
            delay = min(delay * 2, 60.0)

    def download(self, manifest: dict[str, Any], out: Path) -> Export:
        """Every output file into `out` (as Type-N.ndjson), then the server's error files as notes."""
        out.mkdir(parents=True, exist_ok=True)
        secured = manifest.get("requiresAccessToken") is True
        done = Export()
        for n, item in enumerate(manifest.get("output") or (), 1):
            if isinstance(item, dict) and isinstance(item.get("url"), str):
                name = f"{item.get('type', 'Resource')}-{n}.ndjson"
                done.files.append(self.fetch(item["url"], out / name, secured))
        for n, item in enumerate(manifest.get("error") or (), 1):
            if isinstance(item, dict) and isinstance(item.get("url"), str):
                path = self.fetch(item["url"], out / f"errors-{n}.ndjson.txt", secured)
                done.notes.append(f"the server reported problems with the export: see {path}")
        return done

    def fetch(self, url: str, path: Path, secured: bool) -> Path:
        """Download `url` to `path`, resuming a partial `.part` file with a Range request."""
        part = path.with_name(path.name + ".part")
        for _ in range(_ATTEMPTS):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Accept": "application/fhir+ndjson"} | ({"Range": f"bytes={have}-"} if have else {})
            response = self._call("GET", url, headers=headers, stream=True, secured=secured)
            if response.status_code not in (200, 206):
                raise UserError(f"{url}: the download failed ({_outcome(response)}); run the export again")
            mode = "ab" if response.status_code == 206 else "wb"
            try:
                with part.open(mode) as handle:
                    for chunk in response.iter_content(_CHUNK):
                        handle.write(chunk)
            except requests.RequestException:
                continue  # the connection broke: ask for the rest
            finally:
                response.close()
            part.replace(path)
            return path
        raise UserError(
            f"{url}: the download kept breaking off ({_ATTEMPTS} tries); check the network, then run it again"
        )

    def _call(self, method: str, url: str, *, secured: bool = True, **kwargs: Any) -> requests.Response:
        """One request with the token (a 401 fetches a new one once) and waits on 429/503."""
        refreshed = False
        for attempt in range(_ATTEMPTS):
            headers = dict(kwargs.pop("headers", {}))
            if self.auth is not None and secured:
                headers |= self.auth.header()
            response = http_request(self.session, method, url, headers=headers, **kwargs)
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
            if response.status_code == 401 and self.auth is not None and not refreshed:
                self.auth.expire()
                refreshed = True
                continue
            if response.status_code in _RETRY and attempt < _ATTEMPTS - 1:
                wait = retry_after(response)
                self.sleep(min(wait if wait is not None else 2.0**attempt, _MAX_WAIT))
                continue
            return response
        return response


def retry_after(response: requests.Response) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date from now; None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _outcome(response: requests.Response) -> str:
    """The server's reason in one line: an OperationOutcome's diagnostics or text, else the status."""
    body = json_body(response)
    parts = []
    for issue in body.get("issue") or ():
        if isinstance(issue, dict):
            details = issue.get("details")
            text = issue.get("diagnostics") or (details.get("text") if isinstance(details, dict) else None)
            parts.append(str(text or issue.get("code") or ""))
    reason = "; ".join(p for p in parts if p)
    status = f"HTTP {response.status_code}"
    return f"{status}: {' '.join(reason.split())}" if reason else status
