"""The WAMP v2 half of the cross-version test: autobahn-python 26 (asyncio) beside a
WAMP v1 autobahn 0.8 client (autobahn_v1_peer.py) on the demo.

usage: autobahn26_peer.py URL SERIALIZER
It registers com.example.py.mul (the product of its args), com.example.py.fail (an
ApplicationError with args and kwargs) and com.example.py.both (args and kwargs), and
subscribes to com.example.chat; then it prints "ready". When the v1 client's chat line
arrives it answers in the chat and on com.example.py.news (args, kwargs, binary), then
leaves. Prints one JSON object with what it saw, as the last line.
"""
import asyncio
import json
import sys

from autobahn.asyncio.wamp import ApplicationRunner, ApplicationSession
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import CallResult, PublishOptions

url, serializer = sys.argv[1], sys.argv[2]
result = {"invocations": []}


class Peer(ApplicationSession):
    async def onJoin(self, details):
        try:
            await self.scenario(details)
        except Exception as e:  # report, never hang
            result["exception"] = repr(e)
        self.leave()

    async def scenario(self, details):
        result["session"] = details.session

        def mul(*args, **kwargs):
            result["invocations"].append(["mul", list(args), kwargs])
            product = 1
            for a in args:
                product *= a
            return product

        def fail(*args, **kwargs):
            result["invocations"].append(["fail", list(args), kwargs])
            raise ApplicationError("com.example.py.failed", "no good", 7, reason="because")

        def both(*args, **kwargs):
            return CallResult(1, 2, k=3)

        await self.register(mul, "com.example.py.mul")
        await self.register(fail, "com.example.py.fail")
        await self.register(both, "com.example.py.both")
        heard = asyncio.get_running_loop().create_future()

        def on_chat(*args, **kwargs):
            line = args[0] if args else None
            if isinstance(line, dict) and line.get("message") == "hello v2 from autobahn 0.8":
                if not heard.done():
                    heard.set_result([list(args), kwargs])

        await self.subscribe(on_chat, "com.example.chat")
        print("ready", flush=True)
        result["chat"] = await asyncio.wait_for(heard, 20)
        ack = PublishOptions(acknowledge=True)
        await self.publish("com.example.chat", {"message": "hello v1 from autobahn 26"}, options=ack)
        await self.publish("com.example.py.news", b"\x00\xff", 2, k="v", options=ack)
        await self.publish("com.example.py.news", options=ack)

    def onLeave(self, details):
        result["leave"] = details.reason
        self.disconnect()

    def onDisconnect(self):
        asyncio.get_event_loop().stop()


serializers = {"json": JsonSerializer(), "msgpack": MsgPackSerializer(), "cbor": CBORSerializer()}
runner = ApplicationRunner(url, "realm1", serializers=[serializers[serializer]])
try:
    runner.run(Peer)
except Exception as e:
    result["runner_exception"] = repr(e)
print(json.dumps(result))
