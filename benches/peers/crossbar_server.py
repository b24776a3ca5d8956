"""crossbar 26 as a benchmark peer: writes a node config (realm1, anonymous may do anything,
WebSocket on 127.0.0.1:PORT/ws) into a temporary directory and runs `crossbar start`;
prints "ready" when the node has booted. Stops with its children on SIGTERM.

usage: crossbar_server.py PORT
"""
import json
import os
import signal
import subprocess
import sys
import tempfile

port = int(sys.argv[1])
cbdir = tempfile.mkdtemp(prefix="bench-crossbar-")
config = {
    "version": 2,
    "controller": {},
    "workers": [{
        "type": "router",
        "realms": [{
            "name": "realm1",
            "roles": [{"name": "anonymous", "permissions": [{
                "uri": "", "match": "prefix",
                "allow": {"call": True, "register": True, "publish": True, "subscribe": True},
                "disclose": {"caller": False, "publisher": False}, "cache": True}]}],
        }],
        "transports": [{
            "type": "web",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
            "paths": {"ws": {"type": "websocket", "serializers": ["json", "msgpack", "cbor"]}},
        }],
    }],
}
with open(os.path.join(cbdir, "config.json"), "w") as f:
    json.dump(config, f)
crossbar = os.path.join(os.path.dirname(sys.executable), "crossbar")
node = subprocess.Popen(
    [crossbar, "start", "--cbdir", cbdir, "--loglevel", "warn"],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
)


def stop(*_):
    try:
        os.killpg(node.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
# crossbar logs at warn; the router answers once the node has booted: poll the port.
import socket
import time

for _ in range(600):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        break
    except OSError:
        time.sleep(0.1)
print("ready", flush=True)
for line in node.stdout:
    pass
