#!/usr/bin/env python3
"""tls_asyncio_server.py - a tiny OpenAI-style streaming server on asyncio.

In:  HTTP/1.1 POST /v1/completions and /v1/chat/completions (JSON body with
     model, stream, max_tokens, stream_options.include_usage), over TLS when
     --cert and --key are given, plain TCP otherwise. Keep-alive is honoured.
Out: streamed responses as Server-Sent Events with Transfer-Encoding:
     chunked (as uvicorn sends them), one token per event, a usage chunk
     when asked for, then "data: [DONE]"; non-streamed requests get one JSON
     body with usage. With --port 0 the chosen port is written to
     --port-file once listening.
Assumes: only Python's standard library. asyncio's TLS uses memory BIOs
     (SSL_read_ex/SSL_write_ex make no socket syscall), which is the case the
     tracer's libssl probes must tie to a connection; this server exists to
     exercise that path the way vLLM's and SGLang's servers do.
"""
import argparse
import asyncio
import itertools
import json
import os
import ssl

_ids = itertools.count(1)


async def read_request(reader):
    """One request: (method, path, headers, body) or None at end of stream."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    n = int(headers.get("content-length", "0"))
    if n:
        body = await reader.readexactly(n)
    return method, path, headers, body


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(obj):
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def stream(writer, req, chat, rid, ntok, delay):
    model = req.get("model", "tiny")
    usage = req.get("stream_options", {}).get("include_usage", False)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                 b"transfer-encoding: chunked\r\n\r\n")
    obj = "chat.completion.chunk" if chat else "text_completion"
    for i in range(ntok):
        if chat:
            choice = {"index": 0, "delta": {"content": "t%d " % i},
                      "finish_reason": None if i + 1 < ntok else "length"}
        else:
            choice = {"index": 0, "text": "t%d " % i,
                      "finish_reason": None if i + 1 < ntok else "length"}
        writer.write(chunk(event({"id": rid, "object": obj, "model": model,
                                  "choices": [choice]})))
        await writer.drain()
        await asyncio.sleep(delay)
    if usage:
        writer.write(chunk(event({"id": rid, "object": obj, "model": model,
                                  "choices": [],
                                  "usage": {"prompt_tokens": 4,
                                            "completion_tokens": ntok,
                                            "total_tokens": 4 + ntok}})))
    writer.write(chunk(b"data: [DONE]\n\n"))
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def whole(writer, req, chat, rid, ntok):
    text = "".join("t%d " % i for i in range(ntok))
    choice = ({"index": 0, "message": {"role": "assistant", "content": text},
               "finish_reason": "length"} if chat else
              {"index": 0, "text": text, "finish_reason": "length"})
    body = json.dumps({"id": rid, "object": "chat.completion" if chat else
                       "text_completion", "model": req.get("model", "tiny"),
                       "choices": [choice],
                       "usage": {"prompt_tokens": 4, "completion_tokens": ntok,
                                 "total_tokens": 4 + ntok}}).encode()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()


async def handle(reader, writer, args):
    try:
        while True:
            try:
                method, path, headers, body = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            chat = path.startswith("/v1/chat/completions")
            if method != "POST" or not (chat or path.startswith("/v1/completions")):
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                continue
            req = json.loads(body or b"{}")
            ntok = int(req.get("max_tokens", args.tokens))
            rid = "cmpl-%d-%d" % (os.getpid(), next(_ids))
            if req.get("stream"):
                await stream(writer, req, chat, rid, ntok, args.delay_ms / 1000)
            else:
                await whole(writer, req, chat, rid, ntok)
            if headers.get("connection", "").lower() == "close":
                break
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--tokens", type=int, default=5,
                    help="tokens per request when max_tokens is absent")
    ap.add_argument("--delay-ms", type=float, default=2.0,
                    help="pause between token events")
    args = ap.parse_args()
    ctx = None
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args), args.host, args.port, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
