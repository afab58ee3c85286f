"""A small synchronous HTTP client for the daemon's unix socket (stdlib only: starts fast)."""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

from nsmd.defaults import API_SOCKET

TIMEOUT_S = 60.0


class ClientError(Exception):
    """One line for the user: what failed and why."""


def default_socket() -> str:
    return os.environ.get("NSMD_API_SOCKET", API_SOCKET)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("nsmd", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError as err:
            sock.close()
            raise ClientError(f"cannot reach the daemon at {self._path} ({err.strerror}): "
                              "is `nsmd run` running? (--api-socket / NSMD_API_SOCKET)"
                              ) from None
        self.sock = sock


class Client:
    def __init__(self, socket_path: str | None = None):
        self.path = socket_path or default_socket()

    def call(self, method: str, url: str, body: Any = None) -> Any:
        conn = _UnixConnection(self.path, TIMEOUT_S)
        try:
            response = self._send(conn, method, url, body)
            data = response.read()
        finally:
            conn.close()
        payload = _decode(data)
        if response.status >= 400:
            raise ClientError(_error_line(payload, response.status))
        return payload

    def stream(self, url: str) -> Iterator[Any]:
        """Yields one decoded document per NDJSON line until the daemon ends the stream."""
        conn = _UnixConnection(self.path, None)
        try:
            response = self._send(conn, "GET", url, None)
            if response.status >= 400:
                raise ClientError(_error_line(_decode(response.read()), response.status))
            for line in response:
                if line.strip():
                    doc = json.loads(line)
                    if isinstance(doc, dict) and set(doc) == {"error"}:
                        raise ClientError(doc["error"])
                    yield doc
        finally:
            conn.close()

    def _send(self, conn: _UnixConnection, method: str, url: str, body: Any):
        headers = {"Accept": "application/json"}
        encoded = None
        if body is not None:
            encoded = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, url, body=encoded, headers=headers)
            return conn.getresponse()
        except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
            raise ClientError(f"the daemon at {self.path} did not answer ({err})") from None


def _decode(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")


def _error_line(payload: Any, status: int) -> str:
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])
    return f"the daemon answered HTTP {status}: {payload}"
