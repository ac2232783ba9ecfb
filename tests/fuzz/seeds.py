#!/usr/bin/env python3
"""seeds.py - writes the seed corpora of the fuzz targets in tests/fuzz.

In:  nothing (run from anywhere).
Out: tests/fuzz/corpus/<target>/<name> files, each in its target's input
     format (see the comment at the top of tests/fuzz/fuzz_<target>.c).
Assumes: Python 3; the traffic is made up but shaped like vLLM (uvicorn,
     chunked SSE with usage), TGI, llama.cpp and the reference server.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CHAT_BODY = ('{"model":"%s","messages":[{"role":"user","content":"Say hi"}],'
             '"stream":true,"stream_options":{"include_usage":true},'
             '"max_tokens":16,"user":"team-a"}' % MODEL).encode()
COMP_BODY = ('{"model":"%s","prompt":["a b c"],"max_tokens":8,'
             '"stream":false}' % MODEL).encode()
TGI_BODY = b'{"inputs":"a b c","parameters":{"max_new_tokens":3}}'
LLAMA_BODY = b'{"prompt":"a b c","n_predict":3,"stream":true}'


def req(path, body, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: localhost:8000\r\n"
            b"Content-Type: application/json\r\nX-Tenant-Id: team-a\r\n"
            b"Authorization: Bearer sk-test\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" +
            body)


def chunk(b):
    return b"%x\r\n" % len(b) + b + b"\r\n"


def ev_chat(delta, finish=b"null"):
    return (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk",'
            b'"created":1700000000,"model":"' + MODEL.encode() +
            b'","choices":[{"index":0,"delta":' + delta +
            b',"logprobs":null,"finish_reason":' + finish + b'}]}\n\n')


EV_USAGE = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk",'
            b'"choices":[],"usage":{"prompt_tokens":12,"total_tokens":15,'
            b'"completion_tokens":3}}\n\n')
VLLM_EVENTS = [ev_chat(b'{"role":"assistant","content":""}'),
               ev_chat(b'{"content":"Hel"}'), ev_chat(b'{"content":"lo"}'),
               ev_chat(b'{"content":"!"}'),
               ev_chat(b'{"content":""}', b'"stop"'), EV_USAGE,
               b"data: [DONE]\n\n"]
VLLM_SSE = b"".join(VLLM_EVENTS)
SSE_HEAD = (b"HTTP/1.1 200 OK\r\ndate: Fri, 27 Nov 2026 03:30:00 GMT\r\n"
            b"server: uvicorn\r\ncontent-type: text/event-stream; "
            b"charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n")
VLLM_RESP = (SSE_HEAD + b"".join(chunk(e) for e in VLLM_EVENTS[:3]) +
             chunk(b"".join(VLLM_EVENTS[3:5])) +
             chunk(VLLM_EVENTS[5][:40]) + chunk(VLLM_EVENTS[5][40:]) +
             chunk(VLLM_EVENTS[6]) + b"0\r\n\r\n")

TGI_EVENTS = [b'data:{"index":%d,"token":{"id":%d,"text":"x","logprob":-0.5,'
              b'"special":false},"generated_text":null,"details":null}\n\n'
              % (i, 100 + i) for i in range(1, 3)]
TGI_EVENTS.append(b'data:{"index":3,"token":{"id":2,"text":"","logprob":0,'
                  b'"special":true},"generated_text":"xx","details":'
                  b'{"finish_reason":"eos_token","generated_tokens":3}}\n\n')
TGI_SSE = b"".join(TGI_EVENTS)
TGI_RESP = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\nx-compute-type: 1-nvidia-h100\r\n"
            b"\r\n" + b"".join(chunk(e) for e in TGI_EVENTS) + b"0\r\n\r\n")

LLAMA_EVENTS = [b'data: {"content":"a","stop":false,"id_slot":0}\n\n',
                b'data: {"content":"b","stop":false,"id_slot":0}\n\n',
                b'data: {"content":"","stop":true,"tokens_predicted":2,'
                b'"tokens_evaluated":5,"timings":{"prompt_n":5,'
                b'"predicted_n":2,"prompt_ms":1.5,"predicted_ms":9.1}}\n\n']
LLAMA_SSE = b"".join(LLAMA_EVENTS)
LLAMA_RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
              b"Connection: close\r\n\r\n" + LLAMA_SSE)   # ends at close

COMP_JSON = (b'{"id":"cmpl-7","object":"text_completion","model":"' +
             MODEL.encode() + b'","choices":[{"index":0,"text":" d e f",'
             b'"finish_reason":"length"}],"usage":{"prompt_tokens":5,'
             b'"completion_tokens":8,"total_tokens":13}}')
COMP_RESP = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
             b"content-length: %d\r\n\r\n" % len(COMP_JSON) + COMP_JSON)
ERR_JSON = b'{"error":{"message":"model not found","type":"invalid"}}'
ERR_RESP = (b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(ERR_JSON) + ERR_JSON)
CHAT_REQ = req(b"/v1/chat/completions", CHAT_BODY)
COMP_REQ = req(b"/v1/completions?x=1", COMP_BODY)
TGI_REQ = req(b"/generate_stream", TGI_BODY)
LLAMA_REQ = req(b"/completion", LLAMA_BODY)
CHUNKED_REQ = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" +
               chunk(CHAT_BODY[:30]) + chunk(CHAT_BODY[30:]) +
               b"0\r\nX-Trailer: 1\r\n\r\n")


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pieces(descs):
    """Descriptors (len, hole, op) for fuzz_http."""
    return bytes([len(descs)]) + b"".join(bytes(d) for d in descs)


def http_seeds():
    write("http", "chat_request", b"\x00\x00" + CHAT_REQ)
    write("http", "pipelined_requests", b"\x00\x00" + CHAT_REQ + COMP_REQ +
          CHUNKED_REQ)
    write("http", "chunked_request_split",
          b"\x00" + pieces([(7, 0, 2), (60, 0, 2), (1, 0, 2)]) + CHUNKED_REQ)
    write("http", "vllm_response", b"\x01\x00" + VLLM_RESP)
    write("http", "vllm_response_split",
          b"\x01" + pieces([(50, 0, 4), (1, 0, 4), (170, 0, 4),
                            (3, 0, 4)]) + VLLM_RESP)
    # head, then a chunk written whole but cut by the capture cap
    c1 = len(SSE_HEAD) + len(b"%x\r\n" % len(VLLM_EVENTS[0])) + 20
    hole = len(VLLM_EVENTS[0]) - 20 + 2
    write("http", "vllm_response_hole",
          b"\x01" + pieces([(min(c1, 255), 0, 2)]) + VLLM_RESP)
    if c1 <= 255 and hole < 63:
        write("http", "vllm_response_hole",
              b"\x01" + pieces([(c1, 0xc0 + hole, 2)]) + VLLM_RESP)
    write("http", "tgi_response", b"\x01\x00" + TGI_RESP)
    write("http", "llamacpp_response_close", b"\x05\x00" + LLAMA_RESP)
    write("http", "json_responses", b"\x01\x00" + COMP_RESP + ERR_RESP +
          b"HTTP/1.1 204 No Content\r\n\r\n" + COMP_RESP)
    write("http", "head_response", b"\x03\x00" + COMP_RESP[:90] +
          COMP_RESP)


def sse_seeds():
    write("sse", "vllm", b"\x00" + VLLM_SSE)
    write("sse", "vllm_split", b"\x04" + bytes([9, 0, 200, 0, 1, 0, 30, 0])
          + VLLM_SSE)
    write("sse", "vllm_hole", b"\x01" + bytes([100, 81]) + VLLM_SSE)
    write("sse", "tgi", b"\x00" + TGI_SSE)
    write("sse", "llamacpp_crlf", b"\x00" +
          LLAMA_SSE.replace(b"\n", b"\r\n"))
    write("sse", "fields", b"\x00" + b": keep-alive\n\nevent: message\n"
          b"id: 7\nretry: 100\ndata: a\ndata: b\n\ndata\n\n")


def api_seeds():
    write("api", "chat_request", b"\x00" + CHAT_BODY)
    write("api", "chat_request_cut", b"\x01" + CHAT_BODY[:70])
    write("api", "completion_request", b"\x00" + COMP_BODY)
    write("api", "tgi_request", b"\x00" + TGI_BODY)
    write("api", "llamacpp_request", b"\x00" + LLAMA_BODY)

    def evs(lst):
        return b"\x02" + b"\x00".join(e[e.index(b":") + 1:].strip()
                                      for e in lst)
    write("api", "vllm_events", evs(VLLM_EVENTS))
    write("api", "tgi_events", evs(TGI_EVENTS))
    write("api", "llamacpp_events", evs(LLAMA_EVENTS))
    write("api", "error_event", b'\x02{"error":{"message":"overloaded",'
          b'"type":"server_error","code":503}}')
    write("api", "completion_body", bytes([3 | 1 << 2]) + COMP_JSON)
    write("api", "tgi_body", bytes([3 | 4 << 2]) +
          b'[{"generated_text":"xx","details":{"finish_reason":"length",'
          b'"generated_tokens":2}}]')
    write("api", "embeddings_body", bytes([3 | 3 << 2]) +
          b'{"object":"list","data":[{"object":"embedding","index":0,'
          b'"embedding":[0.1,-0.2]}],"model":"e5","usage":'
          b'{"prompt_tokens":4,"total_tokens":4}}')


def requests_seeds():
    def inp(flags, ops, rq, rs):
        return (bytes([flags, len(ops)]) + b"".join(bytes(o) for o in ops) +
                struct.pack("<H", len(rq)) + rq + rs)
    write("requests", "vllm_stream", inp(0, [], CHAT_REQ, VLLM_RESP))
    # request, then the response piece by piece
    ops = [(0, 255, 0, 10), (0x21, 20, 0, 100), (1, 200, 0, 50),
           (1, 255, 0, 50), (1, 255, 0, 50)]
    write("requests", "vllm_stream_interleaved",
          inp(0, ops, CHAT_REQ, VLLM_RESP))
    write("requests", "pipelined", inp(1, [(0x20, 40, 0, 5)],
                                       CHAT_REQ + COMP_REQ + TGI_REQ,
                                       VLLM_RESP + COMP_RESP + TGI_RESP))
    write("requests", "llamacpp_close", inp(2, [(0x20, 30, 0, 5),
                                                (1, 255, 0, 5),
                                                (0x18, 0, 0, 9)],
                                            LLAMA_REQ, LLAMA_RESP))
    write("requests", "two_conns_lost", inp(
        0x80, [(0, 255, 0, 1), (2, 255, 0, 1), (1, 120, 0, 3),
               (3, 120, 0xf0, 3), (0x16, 0, 0, 4), (0x1c, 0, 0, 4)],
        CHAT_REQ, VLLM_RESP))
    write("requests", "error_and_api_key", inp(3, [], COMP_REQ + COMP_REQ,
                                               ERR_RESP + COMP_RESP))
    write("requests", "client_addr_chunked_req", inp(4, [], CHUNKED_REQ,
                                                     VLLM_RESP))


def cupti_seeds():
    def rec(t, body):
        size = 8 + len(body)
        pad = (-size) % 8
        return struct.pack("<HHI", t, 1, size + pad) + body + b"\0" * pad
    stream = rec(1, struct.pack("<IIIIQ", 0x55435454, 1, 4242, 1, 10**9))
    dev = rec(7, struct.pack("<IIQII16s64s", 0, 132, 80 << 30, 9, 0,
                             bytes(range(16)), b"NVIDIA H100 80GB HBM3"))
    name = b"void gemm_kernel<float>(float*, int)"
    nm = rec(6, struct.pack("<II", 1, len(name)) + name + b"\0")
    kern = rec(2, struct.pack("<QQIIIIII3i3iIIII", 2 * 10**9,
                              2 * 10**9 + 5000, 0, 1, 7, 11, 4243, 1,
                              128, 1, 1, 256, 1, 1, 64, 0, 1024, 0))
    copy = rec(3, struct.pack("<QQQIIIIIBBBB", 2 * 10**9 + 6000,
                              2 * 10**9 + 6500, 4096, 0, 1, 7, 12, 4243,
                              2, 1, 2, 0))
    mset = rec(4, struct.pack("<QQQIIIIII", 2 * 10**9 + 7000,
                              2 * 10**9 + 7100, 1 << 20, 0, 1, 7, 13, 4243,
                              0))
    graph = rec(5, struct.pack("<QQIIIIII", 2 * 10**9 + 8000,
                               2 * 10**9 + 9000, 0, 1, 7, 14, 4243, 3))
    drops = rec(8, struct.pack("<QQQQ", 1, 2, 3, 4))
    unknown = rec(99, b"\0" * 16)
    write("cuptirecv", "one_step", stream + dev + nm + kern + copy + mset +
          graph + drops)
    write("cuptirecv", "unknown_type_and_repeat", stream + dev + nm + kern +
          unknown + kern + drops + drops)
    write("cuptirecv", "truncated", (stream + dev + nm + kern)[:-12])


def refserver_seeds():
    write("refserver_http", "chat", b"\x00\x80" + CHAT_REQ)
    write("refserver_http", "pipelined", b"\x00\x40" + CHAT_REQ + COMP_REQ +
          CHUNKED_REQ + b"GET /health HTTP/1.1\r\n\r\n")
    write("refserver_http", "small_limit", b"\x10\xf0" + CHUNKED_REQ)
    write("refserver_http", "expect_close",
          b"\x00\x20" + req(b"/v1/completions", COMP_BODY,
                            b"Expect: 100-continue\r\nConnection: close\r\n"))


http_seeds()
sse_seeds()
api_seeds()
requests_seeds()
cupti_seeds()
refserver_seeds()
