"""Raw-socket HTTP clients against a gateway: one that sends half a request and stops (the gateway must close the
connection after its idle timeout), one that sends bytes that are not HTTP (the gateway must answer 400 or close), one
that closes the connection while its call waits, one that pipelines calls and another route in one write (answered in
order, the last with `Connection: close`), one that waits for `100 Continue` before its body and one that is refused
instead. Prints one JSON object: what happened to each.

usage: python3 slow_http_clients.py PORT IDLE_TIMEOUT_SECONDS
"""
import json
import socket
import sys
import time

port, idle = int(sys.argv[1]), float(sys.argv[2])
result = {}

def read_until_closed(connection, limit):
    """Reads until the peer closes or `limit` seconds pass; returns (bytes read, closed, seconds)."""
    connection.settimeout(limit)
    started = time.monotonic()
    data = b""
    try:
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return data, True, time.monotonic() - started
            data += chunk
    except socket.timeout:
        return data, False, time.monotonic() - started

# Half a request: headers promise 100 bytes of body, 4 come.
half = socket.create_connection(("127.0.0.1", port))
half.sendall(b"POST /v1/pipelines/text-stats/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100\r\n\r\n{\"te")
data, closed, seconds = read_until_closed(half, idle * 5 + 10)
result["half_request"] = {"closed": closed, "seconds": round(seconds, 1), "answer": data.decode(errors="replace")[:80]}

# Not HTTP at all.
garbage = socket.create_connection(("127.0.0.1", port))
garbage.sendall(b"\x16\x03\x01\x02\x00GARBAGE that is not HTTP\r\n\r\n")
data, closed, seconds = read_until_closed(garbage, 10)
result["garbage"] = {"closed": closed, "status_line": data.decode(errors="replace").split("\r\n")[0]}

# A caller that gives up: sends a whole call and closes at once.
gone = socket.create_connection(("127.0.0.1", port))
body = b'{"text": "nobody reads this answer"}'
gone.sendall(b"POST /v1/pipelines/text-stats/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
gone.close()
result["gone"] = {"sent": True}

def read_responses(connection, count, limit):
    """Reads `count` responses (each with Content-Length; a 1xx has no body); returns [(status, headers, body)]."""
    connection.settimeout(limit)
    data, responses = b"", []
    while len(responses) < count:
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return responses
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(data) < length:
            chunk = connection.recv(65536)
            if not chunk:
                return responses
            data += chunk
        body, data = data[:length], data[length:]
        responses.append((status, headers, body.decode()))
    return responses

def call(text, extra=b""):
    body = json.dumps({"text": text}).encode()
    return (b"POST /v1/pipelines/text-stats/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

# Pipelined: two calls, another route, a call with a chunked body and one that closes, all in one write.
chunked = json.dumps({"text": "four five six"}).encode()
pipelined = socket.create_connection(("127.0.0.1", port))
pipelined.sendall(
    call("one") + call("two three") + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    + b"POST /v1/pipelines/text-stats/invoke HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n" % 5 + chunked[:5] + b"\r\n" + b"%x\r\n" % (len(chunked) - 5) + chunked[5:] + b"\r\n0\r\n\r\n"
    + call("a b c d e", b"Connection: close\r\n"))
answers = read_responses(pipelined, 5, 30)
data, closed, _ = read_until_closed(pipelined, 10)
result["pipelined"] = {
    "statuses": [status for status, _, _ in answers],
    "tokens": [json.loads(body).get("output", {}).get("tokens") if "tokens" in body else None
               for _, _, body in answers],
    "health": json.loads(answers[2][2]).get("status") if len(answers) > 2 else None,
    "last_connection": answers[-1][1].get("connection") if answers else None,
    "closed": closed and data == b"",
}

# Expect: 100-continue: the body goes only after the gateway said to.
patient = socket.create_connection(("127.0.0.1", port))
body = json.dumps({"text": "after continue"}).encode()
patient.sendall(b"POST /v1/pipelines/text-stats/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
interim = read_responses(patient, 1, 10)
patient.sendall(body)
final = read_responses(patient, 1, 30)
# Expect: 100-continue with a content type the gateway refuses: the refusal comes before the body, then the close.
refused = socket.create_connection(("127.0.0.1", port))
refused.sendall(b"POST /v1/pipelines/text-stats/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                b"Expect: 100-continue\r\nContent-Length: 100\r\n\r\n")
refusal = read_responses(refused, 1, 10)
data, closed, _ = read_until_closed(refused, 10)
result["continue"] = {
    "interim": interim[0][0] if interim else None,
    "status": final[0][0] if final else None,
    "tokens": json.loads(final[0][2])["output"]["tokens"] if final and final[0][0] == 200 else None,
    "refused_status": refusal[0][0] if refusal else None,
    "refused_closed": closed,
}
print(json.dumps(result))
