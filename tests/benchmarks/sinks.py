"""Fast local peers for the delivery benchmark, run in a process of their own.

    python tests/benchmarks/sinks.py HTTP_PORT SMTP_PORT

- HTTP on 127.0.0.1:HTTP_PORT (keep-alive HTTP/1.1): any POST is a webhook or an SMS to the
  Twilio-compatible path and is answered 200 (201 for `/2010-04-01/...`); each request's
  `webhook-id` (or `Idempotency-Key`) is counted. `GET /count` answers
  `{"requests": N, "distinct": D, "mails": M, "distinct_mails": DM}`; `GET /times` answers
  `{"webhook": [t, ...], "sms": [...], "email": [...]}`, when each message arrived since the
  last reset (CLOCK_MONOTONIC seconds, which every process on the machine shares: the
  end-to-end benchmark compares them with the moment it posted); `POST /reset` clears.
- SMTP on 127.0.0.1:SMTP_PORT: a minimal RFC 5321 server (EHLO, MAIL, RCPT, DATA, RSET,
  NOOP, QUIT) that accepts every message and counts Message-IDs.

Both are asyncio protocols on uvloop: a sink much faster than what is measured, so the
figures are the senders' (ours and rq's), not the sink's. Not a test; never started by pytest.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


class Counts:
    def __init__(self) -> None:
        self.requests = 0
        self.ids: set[bytes] = set()
        self.mails = 0
        self.mail_ids: set[bytes] = set()
        self.times: dict[str, list[float]] = {"webhook": [], "sms": [], "email": []}

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "requests": self.requests,
                "distinct": len(self.ids),
                "mails": self.mails,
                "distinct_mails": len(self.mail_ids),
            }
        ).encode()


COUNTS = Counts()


class Http(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            request_id = b""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                lname = name.strip().lower()
                if lname == b"content-length":
                    length = int(value)
                elif lname in (b"webhook-id", b"idempotency-key"):
                    request_id = value.strip()
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.answer(head.split(b"\r\n", 1)[0], request_id)

    def answer(self, request_line: bytes, request_id: bytes) -> None:
        assert self.transport is not None
        method, path, _ = request_line.split(b" ", 2)
        if method == b"GET" and path == b"/count":
            body = COUNTS.as_json()
            status = b"200 OK"
        elif method == b"GET" and path == b"/times":
            body, status = json.dumps(COUNTS.times).encode(), b"200 OK"
        elif method == b"POST" and path == b"/reset":
            COUNTS.__init__()  # type: ignore[misc]
            body, status = b"{}", b"200 OK"
        else:
            COUNTS.requests += 1
            COUNTS.ids.add(request_id)
            if path.startswith(b"/2010-04-01/"):
                COUNTS.times["sms"].append(time.monotonic())
                body, status = b'{"sid": "SM0", "status": "queued"}', b"201 Created"
            else:
                COUNTS.times["webhook"].append(time.monotonic())
                body, status = b"ok", b"200 OK"
        self.transport.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )


class Smtp(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.in_data = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        transport.write(b"220 sink.bench ESMTP\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        out = []
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                message, self.buffer = self.buffer[:end], self.buffer[end + 5 :]
                self.in_data = False
                COUNTS.mails += 1
                COUNTS.times["email"].append(time.monotonic())
                found = _MESSAGE_ID.search(message)
                if found:
                    COUNTS.mail_ids.add(found.group(1))
                out.append(b"250 2.0.0 queued\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            verb = line[:4].upper()
            if verb == b"EHLO":
                out.append(
                    b"250-sink.bench\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760\r\n"
                )
            elif verb == b"HELO":
                out.append(b"250 sink.bench\r\n")
            elif verb == b"DATA":
                self.in_data = True
                out.append(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                out.append(b"221 bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:  # MAIL, RCPT, RSET, NOOP
                out.append(b"250 OK\r\n")
        if out:
            self.transport.write(b"".join(out))


async def serve(http_port: int, smtp_port: int) -> None:
    loop = asyncio.get_running_loop()
    http = await loop.create_server(Http, "127.0.0.1", http_port, backlog=1024)
    smtp = await loop.create_server(Smtp, "127.0.0.1", smtp_port, backlog=1024)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    async with http, smtp:
        await asyncio.Event().wait()


def main() -> None:
    http_port, smtp_port = int(sys.argv[1]), int(sys.argv[2])
    try:
        import uvloop

        uvloop.run(serve(http_port, smtp_port))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve(http_port, smtp_port))


if __name__ == "__main__":
    main()
