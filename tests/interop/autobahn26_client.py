"""A WAMP v2 client on autobahn-python 26 (asyncio) against the demo.

usage: autobahn26_client.py URL SERIALIZER MODE
  SERIALIZER: json | msgpack | cbor
  MODE: anonymous | cra:USER:SECRET | ticket:USER:TICKET | cryptosign:HEX_SEED
Prints one JSON object with what it saw, as the last line.
"""
import asyncio
import json
import sys

from autobahn.asyncio.wamp import ApplicationRunner, ApplicationSession
from autobahn.wamp import auth
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import CallOptions, PublishOptions, RegisterOptions, SubscribeOptions

url, serializer, mode = sys.argv[1], sys.argv[2], sys.argv[3]
result = {}


class Client(ApplicationSession):
    def onConnect(self):
        if mode.startswith("cryptosign:"):
            from autobahn.wamp.cryptosign import CryptosignKey

            self.key = CryptosignKey.from_bytes(bytes.fromhex(mode.split(":", 1)[1]))
            self.join(
                "realm1",
                ["cryptosign"],
                authextra={"pubkey": self.key.public_key()},
            )
        elif mode.startswith(("cra:", "ticket:")):
            method, user, self.secret = mode.split(":", 2)
            self.join("realm1", ["wampcra" if method == "cra" else "ticket"], user)
        else:
            self.join("realm1")

    def onChallenge(self, challenge):
        if challenge.method == "cryptosign":
            return self.key.sign_challenge(challenge)
        if challenge.method == "ticket":
            return self.secret
        extra = challenge.extra
        key = self.secret
        if "salt" in extra:
            key = auth.derive_key(self.secret, extra["salt"], extra["iterations"], extra["keylen"])
        signature = auth.compute_wcs(key, extra["challenge"])
        return signature.decode("ascii") if isinstance(signature, bytes) else signature

    async def onJoin(self, details):
        try:
            await self.scenario(details)
        except Exception as e:  # report, never hang
            result["exception"] = repr(e)
        self.leave()

    async def scenario(self, details):
        result["session"] = details.session
        result["authid"] = details.authid
        result["authrole"] = details.authrole
        result["authmethod"] = details.authmethod
        result["add"] = await self.call("com.example.add", 1, 2, 39)
        result["echo"] = await self.call("com.example.echo", {"k": [1, "\u00fc"]})
        result["echo_binary"] = list(await self.call("com.example.echo", b"\x00\x01\xfe\xff"))
        try:
            await self.call("com.example.add", "x")
        except ApplicationError as e:
            result["add_error"] = [e.error, list(e.args)]
        try:
            await self.call("com.example.nothing")
        except ApplicationError as e:
            result["notfound"] = e.error
        loop = asyncio.get_running_loop()
        chat = loop.create_future()
        other = loop.create_future()

        def on_chat(*args, **kwargs):
            if not chat.done():
                chat.set_result([list(args), kwargs])

        def on_other(*args, **kwargs):
            if not other.done():
                other.set_result([[list(a) if isinstance(a, bytes) else a for a in args], kwargs])

        named = loop.create_future()

        def on_named(details):
            if not named.done():
                named.set_result(
                    [details.publisher, details.publisher_authid, details.publisher_authrole]
                )

        # The demo's realm names publishers and callers (autobahn 26 sends no disclose_me).
        def whoami(details):
            return [details.caller, details.caller_authid, details.caller_authrole]

        try:
            await self.register(whoami, "com.example.whoami", RegisterOptions(details_arg="details"))
            result["caller"] = await self.call("com.example.whoami")
            await self.subscribe(
                on_named, "com.example.named", SubscribeOptions(details_arg="details")
            )
            await self.publish(
                "com.example.named", options=PublishOptions(acknowledge=True, exclude_me=False)
            )
            result["publisher"] = await asyncio.wait_for(named, 5)
        except ApplicationError as e:
            result["named_error"] = e.error

        # The router ends a call at the caller's timeout (the callee answers too late).
        async def slow():
            await asyncio.sleep(0.3)
            return "late"

        try:
            await self.register(slow, "com.example.slow")
            await self.call("com.example.slow", options=CallOptions(timeout=100))
            result["timeout"] = "answered"
        except ApplicationError as e:
            result["timeout"] = e.error
        # Let the late YIELD go out (the router drops it) before going on.
        await asyncio.sleep(0.4)

        # Progressive results: from the demo's own handler and from a procedure of its own.
        try:
            got = []
            done = await self.call(
                "com.example.countdown", 3, options=CallOptions(on_progress=got.append)
            )
            result["countdown"] = [got, done]

            def ticks(n, details):
                for i in range(n):
                    details.progress(i)
                return "ticked"

            await self.register(ticks, "com.example.ticks", RegisterOptions(details_arg="details"))
            got = []
            done = await self.call(
                "com.example.ticks", 3, options=CallOptions(on_progress=got.append)
            )
            result["ticks"] = [got, done]
        except ApplicationError as e:
            result["progress_error"] = e.error

        # Canceling: the caller cancels its call; the callee (this session too) is interrupted.
        interrupted = loop.create_future()

        async def sleepy():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if not interrupted.done():
                    interrupted.set_result(True)
                raise
            return "woke"

        try:
            await self.register(sleepy, "com.example.sleepy")
            call = asyncio.ensure_future(self.call("com.example.sleepy"))
            await asyncio.sleep(0.2)
            call.cancel()
            try:
                await call
                result["cancel_caller"] = "answered"
            except asyncio.CancelledError:
                result["cancel_caller"] = "canceled"
            result["cancel_callee"] = await asyncio.wait_for(interrupted, 5)
            # The session goes on.
            result["after_cancel"] = await self.call("com.example.add", 1, 1)
        except Exception as e:
            result["cancel_error"] = repr(e)

        # The meta API: this session among the sessions, as the router tells it.
        try:
            result["meta_count"] = await self.call("wamp.session.count")
            me = await self.call("wamp.session.get", details.session)
            result["meta_me"] = [me["session"], me["authrole"]]
        except ApplicationError as e:
            result["meta_error"] = e.error

        # Pattern-based subscriptions and registrations.
        try:
            seen = loop.create_future()

            def on_pattern(n, details):
                if not seen.done():
                    seen.set_result([n, details.topic])

            await self.subscribe(
                on_pattern,
                "com.example.pat.",
                SubscribeOptions(match="prefix", details_arg="details"),
            )
            await self.publish(
                "com.example.pat.x",
                7,
                options=PublishOptions(acknowledge=True, exclude_me=False),
            )
            result["pattern_event"] = await asyncio.wait_for(seen, 5)

            def which(details):
                return details.procedure

            await self.register(
                which,
                "com.example..which",
                RegisterOptions(match="wildcard", details_arg="details"),
            )
            result["pattern_call"] = await self.call("com.example.any.which")
        except ApplicationError as e:
            result["pattern_error"] = e.error

        # The audience by authrole: the first publication excludes this session's role,
        # the second admits only it; a third, unfiltered, marks the end.
        audience = []
        end = loop.create_future()

        def on_audience(n):
            audience.append(n)
            if n == 3 and not end.done():
                end.set_result(None)

        try:
            await self.subscribe(on_audience, "com.example.audience")
            role = [details.authrole]
            for n, opts in [
                (1, dict(exclude_authrole=role)),
                (2, dict(eligible_authrole=role)),
                (3, {}),
            ]:
                await self.publish(
                    "com.example.audience",
                    n,
                    options=PublishOptions(acknowledge=True, exclude_me=False, **opts),
                )
            await asyncio.wait_for(end, 5)
            result["audience"] = audience
        except ApplicationError as e:
            result["audience_error"] = e.error

        try:
            await self.subscribe(on_chat, "com.example.chat")
            await self.subscribe(on_other, "com.example.other")
        except ApplicationError as e:
            result["subscribe_error"] = e.error
            return
        try:
            pub = await self.publish(
                "com.example.chat",
                "hello from autobahn 26",
                options=PublishOptions(acknowledge=True, exclude_me=False),
            )
            result["published"] = pub.id > 0
            result["chat"] = await asyncio.wait_for(chat, 5)
            await self.publish(
                "com.example.other",
                b"\x00\xff",
                2,
                k="v",
                options=PublishOptions(acknowledge=True, exclude_me=False),
            )
            result["other"] = await asyncio.wait_for(other, 5)
        except ApplicationError as e:
            result["publish_error"] = e.error

    def onLeave(self, details):
        result["leave"] = details.reason
        self.disconnect()

    def onDisconnect(self):
        asyncio.get_event_loop().stop()


serializers = {
    "json": JsonSerializer(),
    "msgpack": MsgPackSerializer(),
    "cbor": CBORSerializer(),
}
runner = ApplicationRunner(url, "realm1", serializers=[serializers[serializer]])
try:
    runner.run(Client)
except Exception as e:
    result["runner_exception"] = repr(e)
print(json.dumps(result))
