"""A small Mailchimp Marketing API over real HTTP, for the real client to talk to.

It implements what the service uses: list members (set, update, delete permanently,
list by status and change time), batch operations with a results archive, and failure
injection (whole requests answering 429 or 500, or single members refusing).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


@dataclass
class FakeMailchimp:
    api_key: str = "fake-key-us1"
    list_id: str = "list123"
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    member_failures: dict[str, int] = field(default_factory=dict)
    polls_before_finished: int = 1
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return self.base + "/3.0"

    def start(self) -> FakeMailchimp:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload, content_type = fake.handle(
                    self.command, self.path, body, self.headers.get("Authorization", "")
                )
                self.send_response(status)
                if payload is None:
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # ---- the API ---------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, body: bytes, auth: str) -> tuple[int, Any, str]:
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query)
        with self.lock:
            self.requests.append((method, path))
            if path.startswith("/results/"):
                return self._results(path)
            expected = "Basic " + base64.b64encode(f"user:{self.api_key}".encode()).decode()
            if auth != expected:
                return 401, _problem(401, "API Key Invalid"), "application/problem+json"
            if self.fail_next:
                code = self.fail_next.pop(0)
                return code, _problem(code, "Injected failure"), "application/problem+json"
            data = json.loads(body) if body else {}
            status, payload = self.route(method, path, query, data)
            return status, payload, "application/json"

    def route(
        self, method: str, path: str, query: dict[str, list[str]], data: dict[str, Any]
    ) -> tuple[int, Any]:
        if path == "/3.0/ping":
            return 200, {"health_status": "Everything's Chimpy!"}
        if path == "/3.0/batches" and method == "POST":
            return self._start_batch(data)
        match = re.fullmatch(r"/3\.0/batches/(\w+)", path)
        if match and method == "GET":
            return self._batch_status(match.group(1))
        match = re.fullmatch(r"/3\.0/lists/(\w+)/members", path)
        if match and method == "GET":
            return self._list(match.group(1), query)
        match = re.fullmatch(r"/3\.0/lists/(\w+)/members/(\w+)(/actions/delete-permanent)?", path)
        if match:
            list_id, member, delete = match.groups()
            if list_id != self.list_id:
                return 404, _problem(404, "Resource Not Found")
            if delete and method == "POST":
                return self._delete(member)
            if method == "PUT":
                return self._put(member, data)
            if method == "PATCH":
                return self._patch(member, data)
            if method == "GET":
                found = self.members.get(member)
                return (200, found) if found else (404, _problem(404, "Resource Not Found"))
        return 404, _problem(404, "Resource Not Found")

    def _now(self) -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")

    def _put(self, member: str, data: dict[str, Any]) -> tuple[int, Any]:
        if member in self.member_failures:
            code = self.member_failures[member]
            return code, _problem(code, "Member refused")
        email = data.get("email_address", "")
        if md5(email) != member:
            return 400, _problem(400, "The subscriber hash does not match the address")
        existing = self.members.get(member, {})
        record = {
            "id": member,
            "email_address": email,
            "status": data.get("status") or existing.get("status") or data.get("status_if_new"),
            "timestamp_opt": data.get("timestamp_opt", existing.get("timestamp_opt", "")),
            "merge_fields": data.get("merge_fields", existing.get("merge_fields", {})),
            "last_changed": self._now(),
        }
        self.members[member] = record
        return 200, record

    def _patch(self, member: str, data: dict[str, Any]) -> tuple[int, Any]:
        if member in self.member_failures:
            code = self.member_failures[member]
            return code, _problem(code, "Member refused")
        record = self.members.get(member)
        if record is None:
            return 404, _problem(404, "Resource Not Found")
        if "status" in data:
            record["status"] = data["status"]
        if "email_address" in data:
            del self.members[member]
            record["email_address"] = data["email_address"]
            record["id"] = md5(data["email_address"])
            self.members[record["id"]] = record
        record["last_changed"] = self._now()
        return 200, record

    def _delete(self, member: str) -> tuple[int, Any]:
        if member not in self.members:
            return 404, _problem(404, "Resource Not Found")
        del self.members[member]
        return 204, None

    def _list(self, list_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        status = query.get("status", [None])[0]
        since = query.get("since_last_changed", [None])[0]
        count = int(query.get("count", ["10"])[0])
        offset = int(query.get("offset", ["0"])[0])
        found = [
            m
            for m in self.members.values()
            if (status is None or m["status"] == status)
            and (since is None or m["last_changed"] > since)
        ]
        found.sort(key=lambda m: m["id"])
        return 200, {"members": found[offset : offset + count], "total_items": len(found)}

    def _start_batch(self, data: dict[str, Any]) -> tuple[int, Any]:
        batch_id = f"b{len(self.batches) + 1}"
        results = []
        errored = 0
        for operation in data.get("operations", []):
            body = json.loads(operation["body"]) if operation.get("body") else {}
            status, payload = self.route(operation["method"], "/3.0" + operation["path"], {}, body)
            errored += status >= 400
            results.append(
                {
                    "status_code": status,
                    "operation_id": operation.get("operation_id"),
                    "response": json.dumps(payload or {}),
                }
            )
        self.batches[batch_id] = {
            "id": batch_id,
            "polls": 0,
            "total_operations": len(results),
            "errored_operations": errored,
            "results": results,
        }
        return 200, {"id": batch_id, "status": "pending"}

    def _batch_status(self, batch_id: str) -> tuple[int, Any]:
        batch = self.batches.get(batch_id)
        if batch is None:
            return 404, _problem(404, "Resource Not Found")
        batch["polls"] += 1
        finished = batch["polls"] >= self.polls_before_finished
        return 200, {
            "id": batch_id,
            "status": "finished" if finished else "started",
            "total_operations": batch["total_operations"],
            "finished_operations": batch["total_operations"] if finished else 0,
            "errored_operations": batch["errored_operations"],
            "response_body_url": f"{self.base}/results/{batch_id}.tar.gz" if finished else "",
        }

    def _results(self, path: str) -> tuple[int, Any, str]:
        batch = self.batches.get(path.removeprefix("/results/").removesuffix(".tar.gz"))
        if batch is None:
            return 404, b"", "application/octet-stream"
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            content = json.dumps(batch["results"]).encode()
            info = tarfile.TarInfo("results/1.json")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        return 200, buffer.getvalue(), "application/x-gzip"

    def add_member(self, email: str, status: str, last_changed: str | None = None) -> None:
        with self.lock:
            self.members[md5(email)] = {
                "id": md5(email),
                "email_address": email,
                "status": status,
                "timestamp_opt": "",
                "merge_fields": {},
                "last_changed": last_changed or self._now(),
            }


def _problem(status: int, title: str) -> dict[str, Any]:
    return {
        "type": "https://mailchimp.com/developer/",
        "title": title,
        "status": status,
        "detail": title,
        "instance": "",
    }
