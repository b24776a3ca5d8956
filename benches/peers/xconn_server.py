"""xconn 0.5.1 as a benchmark peer: a WAMP v2 router for realm1 on ws://127.0.0.1:PORT/ws.

usage: xconn_server.py PORT   (prints "ready" once it listens)
"""
import asyncio
import sys

from xconn import Router, Server


async def main(port):
    router = Router()
    router.add_realm("realm1")
    await Server(router).start("127.0.0.1", port)
    print("ready", flush=True)
    await asyncio.Event().wait()


asyncio.run(main(int(sys.argv[1])))
