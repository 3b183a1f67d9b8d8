"""Misbehaving HTTP clients against a gateway: one that sends half a request and stops (the gateway must close the
connection after its idle timeout), one that sends bytes that are not HTTP (the gateway must answer 400 or close),
and one that closes the connection while its call waits. Prints one JSON object: what happened to each.

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
print(json.dumps(result))
