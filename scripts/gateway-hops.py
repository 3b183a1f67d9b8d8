#!/usr/bin/env python3
"""What the gateway adds to a call, from a loopback capture of one call at a time through the gateway beside one
call at a time over Kafka (`scripts/gateway-benchmark.sh`, TOGETHER rounds, when tcpdump is there).

The capture's time stamps are taken as packets pass the loopback device, so the embedded broker's fetch cycle (which
moves a call's round trip by a millisecond from one start to the next) drops out: each figure is the time between
two packets of one process.

- gateway, request: the HTTP request comes in -> the gateway's Produce request goes out;
- gateway, answer: the Fetch response with the call's response comes in -> the HTTP response goes out;
- HTTP client (wrk): the HTTP response -> its next HTTP request;
- Kafka client (`sluice bench`): the Fetch response with a response comes in -> its next Produce request goes out.

The Kafka client's turnaround holds what a Kafka client spends on a call of its own (reading the response, sending
the next request); the gateway's two figures and wrk's hold the same work done over HTTP. So what the gateway adds to
a call is gateway request + gateway answer + wrk - Kafka client.

usage: gateway-hops.py CAPTURE.pcap BROKER_PORT HTTP_PORT ROLES
  ROLES: lines "LOCAL_PORT ROLE" for the client connections to the broker, ROLE one of gateway, bench, worker.
Prints one line per figure (median, p90, p99 in ms) and a last line "added p50 +X.XXX ms".
"""
import statistics
import struct
import sys
from collections import Counter

PRODUCE, FETCH = 0, 1


def packets(path):
    """(time, source port, destination port, TCP payload) of each IPv4 TCP segment that carries data."""
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    fraction = 1e9 if magic == 0xA1B23C4D else 1e6
    link = struct.unpack("<I", data[20:24])[0]
    header = {1: 14, 113: 16, 0: 4}[link]  # Ethernet (Linux lo), Linux cooked, BSD loopback
    offset = 24
    while offset + 16 <= len(data):
        seconds, part, captured, _ = struct.unpack("<IIII", data[offset:offset + 16])
        frame = data[offset + 16 + header:offset + 16 + captured]
        offset += 16 + captured
        if len(frame) < 20 or frame[0] >> 4 != 4 or frame[9] != 6:
            continue
        ip_length = (frame[0] & 15) * 4
        total = struct.unpack(">H", frame[2:4])[0]
        tcp = frame[ip_length:]
        source, destination = struct.unpack(">HH", tcp[:4])
        tcp_length = (tcp[12] >> 4) * 4
        if total - ip_length - tcp_length > 0:
            yield seconds + part / fraction, source, destination, tcp[tcp_length:]


def events(path, broker_port, http_port, roles):
    """(time, what, role): HTTP requests and responses, Produce requests, Fetch responses with their sizes."""
    requests = {}  # (client port, correlation id) -> API key
    for time, source, destination, payload in packets(path):
        if destination == http_port:
            yield time, "http request", "gateway"
        elif source == http_port:
            yield time, "http response", "gateway"
        elif destination == broker_port and source in roles and len(payload) >= 12:
            _, api, _, correlation = struct.unpack(">ihhi", payload[:12])
            requests[(source, correlation)] = api
            if api == PRODUCE:
                yield time, "produce", roles[source]
        elif source == broker_port and destination in roles and len(payload) >= 8:
            size, correlation = struct.unpack(">ii", payload[:8])
            if requests.pop((destination, correlation), None) == FETCH:
                yield time, size, roles[destination]


def hops(path, broker_port, http_port, roles):
    timeline = sorted(events(path, broker_port, http_port, roles), key=lambda event: event[0])
    # An empty Fetch response (the broker held it for fetch.wait.max.ms) has the size most of a consumer's have;
    # one with records is larger.
    sizes = {}
    for _, what, role in timeline:
        if isinstance(what, int):
            sizes.setdefault(role, Counter())[what] += 1
    empty = {role: counts.most_common(1)[0][0] for role, counts in sizes.items()}
    figures = {name: [] for name in ("gateway, request", "gateway, answer", "HTTP client (wrk)", "Kafka client")}
    since = {}
    for time, what, role in timeline:
        answer = isinstance(what, int) and what > empty[role] + 40
        if role == "gateway":
            if what == "http request":
                if "http response" in since:
                    figures["HTTP client (wrk)"].append(time - since.pop("http response"))
                since["http request"] = time
            elif what == "produce" and "http request" in since:
                figures["gateway, request"].append(time - since.pop("http request"))
            elif answer:
                since["answer"] = time
            elif what == "http response" and "answer" in since:
                figures["gateway, answer"].append(time - since.pop("answer"))
                since["http response"] = time
        elif role == "bench":
            if answer:
                since["bench answer"] = time
            elif what == "produce" and "bench answer" in since:
                figures["Kafka client"].append(time - since.pop("bench answer"))
    return figures


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1e3


def main():
    path, broker_port, http_port, roles_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    roles = {}
    for line in open(roles_path):
        port, role = line.split()
        roles[int(port)] = role
    figures = hops(path, broker_port, http_port, roles)
    if any(not values for values in figures.values()):
        sys.exit(f"gateway-hops: nothing measured for {[name for name, v in figures.items() if not v]}")
    for name, values in figures.items():
        print(f"  {name:20} {len(values):6} calls: p50 {percentile(values, .5):.3f} ms, "
              f"p90 {percentile(values, .9):.3f}, p99 {percentile(values, .99):.3f}")
    added = sum(statistics.median(figures[name]) for name in ("gateway, request", "gateway, answer",
                                                                "HTTP client (wrk)"))
    print(f"  added p50 {(added - statistics.median(figures['Kafka client'])) * 1e3:+.3f} ms")


if __name__ == "__main__":
    main()
