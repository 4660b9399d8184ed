#!/usr/bin/env python3
"""A complete Janus client in the standard library (see docs/protocol.md).

    python3 examples/client.py subscribe TOPIC [--count N] [--addr HOST:PORT]
    python3 examples/client.py publish TOPIC JSON [--addr HOST:PORT]

subscribe prints each delivery's data, one per line, until Ctrl-C (or N of
them); publish sends one message the 2009 way and waits for the server to
close the connection. The server's client port defaults to 127.0.0.1:8081.
"""
import argparse, json, socket, sys


def frames(sock):
    """Yields each server frame's payload: bytes up to a 0x01 terminator (P1)."""
    buf = b""
    while True:
        while b"\x01" in buf:
            frame, buf = buf.split(b"\x01", 1)
            yield frame.decode()
        chunk = sock.recv(65536)
        if not chunk:
            return  # the server closed the connection
        buf += chunk


def parse(frame):
    """A server frame as a JSON object; anything else ends the client, saying what came."""
    if frame is None:
        sys.exit("the server closed the connection")
    try:
        message = json.loads(frame)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        sys.exit("unexpected frame from the server: %r" % frame[:200])
    return message


def fail(message):
    """Ends the client with the server's error frame (P7), or what came instead."""
    if "error" in message:
        sys.exit("error: %s: %s" % (message["error"], message.get("reason", "")))
    sys.exit("unexpected frame from the server: %s" % json.dumps(message)[:200])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["subscribe", "publish"])
    p.add_argument("topic")
    p.add_argument("data", nargs="?", default="null")
    p.add_argument("--count", type=int)
    p.add_argument("--addr", default="127.0.0.1:8081")
    a = p.parse_args()
    host, port = a.addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # P9
    incoming = frames(sock)
    hello = parse(next(incoming, None))  # P2; a server that is full says so instead
    if "token" not in hello:
        fail(hello)
    print("token", hello["token"], file=sys.stderr)
    if a.command == "publish":  # P5: PUBLISH, the JSON, then the server closes
        body = {"topic": a.topic, "event": "example", "data": json.loads(a.data)}
        sock.sendall(b"PUBLISH\x00" + json.dumps(body).encode() + b"\x00")
        for frame in incoming:  # an error frame if the publish was refused
            fail(parse(frame))
        return
    sock.sendall(json.dumps({"action": "subscribe", "data": a.topic}).encode() + b"\x00")
    received = 0
    for frame in incoming:
        if frame == "ACK":  # P3: the subscription is live
            print("subscribed to", a.topic, file=sys.stderr, flush=True)
        elif frame == "PING":  # P4
            sock.sendall(b"PONG\x00")
        else:
            message = parse(frame)
            if "data" not in message:
                fail(message)
            print(json.dumps(message["data"]), flush=True)  # P6
            received += 1
            if received == a.count:
                return
    sys.exit("the server closed the connection")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
