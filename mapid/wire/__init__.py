"""The wire protocol, once for both ends (docs/protocol.md 2, 3, 9).

envelope.py builds and reads every message shape (requests, replies, events,
notifications) and names the topics; codec.py packs them with msgpack inside the
protocol's limits; link.py holds the socket settings both ends must agree on (zmq flags,
CURVE heartbeats).

May import: the standard library, pyzmq and msgpack, and `mapid.errors`. Never the
daemon, the providers or the CLI (tests/test_layout.py checks).
"""
