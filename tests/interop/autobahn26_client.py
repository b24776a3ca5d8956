"""A WAMP v2 client on autobahn-python 26 (asyncio) against the demo.

usage: autobahn26_client.py URL SERIALIZER MODE
  SERIALIZER: json | msgpack | cbor
  MODE: anonymous | cra:USER:SECRET | ticket:USER:TICKET | cryptosign:HEX_SEED | advanced
        | roles:USER:TICKET
Prints one JSON object with what it saw, as the last line.

`advanced` (WebSocket URLs only) opens several anonymous sessions of its own and reports on
event history, testaments, retained events, shared registrations and call timeouts (see
`advanced()`), within 15 s in all.

`roles:USER:TICKET` (WebSocket URLs only) is for a router with a role table (not the demo; see
`roles()` and tests/interop_v2.rs): an anonymous session and USER, signed in with TICKET,
report what each may do, within 10 s in all.
"""
import asyncio
import inspect
import json
import sys
import urllib.parse

from autobahn.asyncio.wamp import ApplicationRunner, ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp import auth, message, role
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import (
    CallOptions,
    ComponentConfig,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)

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


async def advanced():
    """Mode `advanced`: several sessions of this serializer against the demo.

    Fills `result` with one key per feature: `history`, `testament`, `retained`, `shared`,
    `timeout`, and `call_progress` (what autobahn-python 26 offers for progressive call
    invocations: nothing, see there).
    """
    loop = asyncio.get_running_loop()
    where = urllib.parse.urlparse(url)

    async def session():
        """A new anonymous session on its own WebSocket connection, joined to realm1."""
        joined = loop.create_future()
        left = loop.create_future()

        class Peer(ApplicationSession):
            def onJoin(self, details):
                if not joined.done():
                    joined.set_result(self)

            def onLeave(self, details):
                if not left.done():
                    left.set_result(details.reason)
                return super().onLeave(details)

        factory = WampWebSocketClientFactory(
            lambda: Peer(ComponentConfig("realm1")),
            url=url,
            serializers=[type(serializers[serializer])()],
        )
        await loop.create_connection(factory, where.hostname, where.port)
        peer = await asyncio.wait_for(joined, 5)
        peer.left_reason = left
        return peer

    def queue_handler(q):
        """An event handler (details_arg="details") putting [args, kwargs, details] on q."""

        def on_event(*args, details, **kwargs):
            q.put_nowait([list(args), kwargs, details])

        return on_event

    async def next_event(q):
        return await asyncio.wait_for(q.get(), 5)

    ack = PublishOptions(acknowledge=True)
    with_details = SubscribeOptions(details_arg="details")

    # 1. Event history: three acknowledged publications, then a new session subscribes and
    # asks for the last two (the demo keeps 20 per com.example. topic and names publishers).
    publisher = await session()
    reader = await session()
    topic = f"com.example.history.{serializer}"
    publications = []
    for n, word, kwargs in [(1, "one", {}), (2, "two", {"k": "v"}), (3, "three", {})]:
        pub = await publisher.publish(topic, n, word, options=ack, **kwargs)
        publications.append(pub.id)
    sub = await reader.subscribe(lambda *a, **k: None, topic)
    last_two = await reader.call("wamp.subscription.get_events", sub.id, 2)
    every = await reader.call("wamp.subscription.get_events", sub.id)
    result["history"] = {
        "publisher": publisher.session_id,
        "publications": publications,
        "subscription": sub.id,
        "last_two": last_two,
        "every": [e["args"] for e in every],
    }

    # 2. Testaments: A's transport is dropped (TCP aborted, no WebSocket close, no GOODBYE),
    # D's WebSocket is closed without GOODBYE, C leaves with GOODBYE. The subscriber B hears
    # A's, D's and C's testaments, then the marker B publishes after E has gone (none from
    # E, which flushed its own).
    topic = f"com.example.will.{serializer}"
    wills = asyncio.Queue()
    await reader.subscribe(queue_handler(wills), topic, with_details)
    seen = []

    async def will():
        args, kwargs, details = await next_event(wills)
        seen.append([args, kwargs, details.publisher, details.topic])

    a = await session()
    ids = {"a": a.session_id, "b": reader.session_id}
    await a.call("wamp.session.add_testament", topic, [1], {})
    # ITransport.abort() fails the WebSocket connection; autobahn's client fails by drop:
    # the TCP connection is aborted, no close frame.
    a._transport.abort()
    await will()
    d = await session()
    ids["d"] = d.session_id
    await d.call("wamp.session.add_testament", topic, [2], {"by": "d"})
    d._transport.close()  # a WebSocket close frame, but no GOODBYE
    await will()
    # C leaves with GOODBYE: its testament is published too (the spec), unless flushed,
    # which E does before it leaves.
    c = await session()
    ids["c"] = c.session_id
    await c.call("wamp.session.add_testament", topic, [3], {})
    c.leave()
    c_left = await asyncio.wait_for(c.left_reason, 5)
    await will()
    e = await session()
    await e.call("wamp.session.add_testament", topic, [5], {})
    flushed = await e.call("wamp.session.flush_testaments")
    e.leave()
    await asyncio.wait_for(e.left_reason, 5)
    await asyncio.sleep(0.3)  # E's connection closes; a testament would be out by now
    await reader.publish(
        topic, 4, options=PublishOptions(acknowledge=True, exclude_me=False)
    )
    await will()
    result["testament"] = dict(ids, c_leave=c_left, flushed=flushed, events=seen)

    # 3. Retained events: the last retained publication goes to a later subscription that
    # asks for it (details.retained), not to one that does not; then both get a live one.
    topic = f"com.example.retained.{serializer}"
    for word in ["first", "kept"]:
        await publisher.publish(
            topic, word, options=PublishOptions(acknowledge=True, retain=True)
        )
    asks, plain = asyncio.Queue(), asyncio.Queue()
    late = await session()
    await late.subscribe(
        queue_handler(asks),
        topic,
        SubscribeOptions(get_retained=True, details_arg="details"),
    )
    await reader.subscribe(queue_handler(plain), topic, with_details)
    await publisher.publish(topic, "live", options=ack)
    got = {"asks": [], "plain": []}
    for name, q, count in [("asks", asks, 2), ("plain", plain, 1)]:
        for _ in range(count):
            args, _, details = await next_event(q)
            got[name].append([args, details.retained])
    await asyncio.sleep(0.2)  # nothing more comes
    got["more"] = asks.qsize() + plain.qsize()
    result["retained"] = got

    # 4. Shared registrations: two callees `roundrobin` share one registration, a `single`
    # REGISTER is refused, four calls alternate in registration order.
    proc = f"com.example.shared.{serializer}"
    x, y = await session(), await session()
    rx = await x.register(lambda: "x", proc, RegisterOptions(invoke="roundrobin"))
    ry = await y.register(lambda: "y", proc, RegisterOptions(invoke="roundrobin"))
    shared = {"same_id": rx.id == ry.id}
    try:
        await reader.register(lambda: "b", proc, RegisterOptions(invoke="single"))
        shared["refused"] = None
    except ApplicationError as e:
        shared["refused"] = e.error
    shared["calls"] = [await reader.call(proc) for _ in range(4)]
    result["shared"] = shared

    # 5. Call timeout. CallOptions documents `timeout` as "time in seconds" (a float), but
    # autobahn-python puts it into CALL.Options as it is and message.Call asserts an int: the
    # wire's milliseconds. CallOptions(timeout=0.2) fails in the client; timeout=200 is
    # 200 ms for the router.
    proc = f"com.example.never.{serializer}"
    invoked = []
    interrupted = loop.create_future()

    async def never():
        invoked.append(True)
        try:
            await loop.create_future()  # never answers
        except asyncio.CancelledError:
            if not interrupted.done():
                interrupted.set_result(True)
            raise

    await x.register(never, proc)
    timeout = {}
    try:
        await asyncio.wait_for(reader.call(proc, options=CallOptions(timeout=0.2)), 3)
        timeout["seconds"] = "answered"
    except Exception as e:
        timeout["seconds"] = type(e).__name__
    start = loop.time()
    try:
        await asyncio.wait_for(reader.call(proc, options=CallOptions(timeout=200)), 5)
        timeout["error"] = "answered"
    except ApplicationError as e:
        timeout["error"] = e.error
    elapsed = loop.time() - start
    timeout["within"] = 0.2 <= elapsed < 2
    timeout["invoked"] = len(invoked)
    # autobahn's callee announces call_canceling: the router sends INTERRUPT (killnowait),
    # which cancels the handler.
    timeout["interrupted"] = await asyncio.wait_for(interrupted, 5)
    timeout["after"] = await x.call("com.example.add", 2, 2)
    result["timeout"] = timeout

    # 6. Progressive call invocations (CALL.Options.progress): autobahn-python 26.10.2 cannot
    # send them. CallOptions has no `progress`, message.Call takes no `progress` (so it never
    # marshals one) and the caller's role features have no `progressive_call_invocations` to
    # announce. Reported, so that a newer autobahn-python that can is noticed.
    def takes(fn, name):
        return name in inspect.signature(fn).parameters

    result["call_progress"] = [
        takes(CallOptions.__init__, "progress"),
        takes(message.Call.__init__, "progress"),
        takes(role.RoleCallerFeatures.__init__, "progressive_call_invocations"),
    ]

    for peer in [publisher, reader, d, late, x, y]:
        if peer.is_attached():
            peer.leave()
    await asyncio.sleep(0.1)


async def roles():
    """Mode `roles:USER:TICKET`: a router whose role table gives the role `anonymous` call and
    subscribe under `com.example.` (but nothing on `com.example.secret`) and USER's role
    everything, disclosing it as a publisher (tests/interop_v2.rs).

    Fills `result` with `welcome` (each session's SessionDetails), `anonymous` and `user`
    (what each was answered: a result, or the error URI), `invocation` (what USER's callee
    was told of the anonymous caller) and `event` (USER's publication as the anonymous
    subscriber got it, with EventDetails' publisher, publisher_authid, publisher_authrole).
    """
    loop = asyncio.get_running_loop()
    where = urllib.parse.urlparse(url)
    _, user, ticket = mode.split(":", 2)

    async def session(credentials=None):
        """A new session on its own WebSocket connection joined to realm1: anonymous, or
        with ticket authentication for `credentials` (authid, ticket). Its SessionDetails."""
        joined = loop.create_future()

        class Peer(ApplicationSession):
            def onConnect(self):
                if credentials:
                    self.join("realm1", ["ticket"], credentials[0])
                else:
                    self.join("realm1")

            def onChallenge(self, challenge):
                return credentials[1]

            def onJoin(self, details):
                if not joined.done():
                    joined.set_result((self, details))

            def onLeave(self, details):
                # An ABORT instead of WELCOME: report its reason rather than wait.
                if not joined.done():
                    joined.set_exception(ApplicationError(details.reason))
                return super().onLeave(details)

        factory = WampWebSocketClientFactory(
            lambda: Peer(ComponentConfig("realm1")),
            url=url,
            serializers=[type(serializers[serializer])()],
        )
        await loop.create_connection(factory, where.hostname, where.port)
        return await asyncio.wait_for(joined, 5)

    async def outcome(request):
        """What a request ends with: its result (True for a subscription or registration,
        the publication for an acknowledged publish), or its error URI."""
        try:
            got = await asyncio.wait_for(request, 5)
        except ApplicationError as e:
            return e.error
        if hasattr(got, "id"):
            return True
        return got

    anon, anon_details = await session()
    svc, svc_details = await session((user, ticket))
    result["welcome"] = {
        "anonymous": [
            isinstance(anon_details.authid, str) and anon_details.authid != "",
            anon_details.authrole,
            anon_details.authmethod,
        ],
        "user": [svc_details.authid, svc_details.authrole, svc_details.authmethod],
    }
    result["sessions"] = {"anonymous": anon_details.session, "user": svc_details.session}
    ack = PublishOptions(acknowledge=True)

    # The anonymous role: call and subscribe under com.example., nothing else; nothing at all
    # on com.example.secret (the exact rule beats the prefix).
    def nothing(*args, **kwargs):
        pass

    anonymous = {
        "add": await outcome(anon.call("com.example.add", 1, 2)),
        "secret": await outcome(anon.call("com.example.secret")),
        "register": await outcome(anon.register(nothing, "com.example.anon.proc")),
        "publish": await outcome(anon.publish("com.example.news", "from anonymous", options=ack)),
        "subscribe_secret": await outcome(anon.subscribe(nothing, "com.example.secret")),
    }

    # The user's role (backend): everything, on any URI.
    invocations = []

    def echo(*args, details):
        invocations.append([details.caller, details.caller_authid, details.caller_authrole])
        return list(args)

    def status():
        return "up"

    with_details = RegisterOptions(details_arg="details")
    result["user"] = {
        "add": await outcome(svc.call("com.example.add", 2, 3)),
        "secret": await outcome(svc.call("com.example.secret")),
        "register": await outcome(svc.register(echo, "com.example.svc.echo", with_details)),
        "register_outside": await outcome(svc.register(status, "org.svc.status")),
        "status": await outcome(svc.call("org.svc.status")),
    }

    # The anonymous session calls the user's procedures: the one under com.example. (its
    # rule does not disclose callers), not the one no rule of its role covers.
    anonymous["echo"] = await outcome(anon.call("com.example.svc.echo", "hi", 7))
    anonymous["status"] = await outcome(anon.call("org.svc.status"))
    result["invocation"] = invocations

    # The user's publication reaches the anonymous subscriber, naming the user (its rule
    # discloses publishers; autobahn 26 sends no disclose_me).
    events = asyncio.Queue()

    def on_news(*args, details, **kwargs):
        events.put_nowait(
            [
                list(args),
                kwargs,
                details.publisher,
                details.publisher_authid,
                details.publisher_authrole,
            ]
        )

    anonymous["subscribe"] = await outcome(
        anon.subscribe(on_news, "com.example.news", SubscribeOptions(details_arg="details"))
    )
    result["anonymous"] = anonymous
    published = await outcome(svc.publish("com.example.news", "from svc", n=1, options=ack))
    result["user"]["publish"] = published
    result["event"] = await asyncio.wait_for(events.get(), 5)
    await asyncio.sleep(0.2)  # nothing more comes
    result["more_events"] = events.qsize()

    for peer in [anon, svc]:
        if peer.is_attached():
            peer.leave()
    await asyncio.sleep(0.1)


serializers = {
    "json": JsonSerializer(),
    "msgpack": MsgPackSerializer(),
    "cbor": CBORSerializer(),
}
if mode == "advanced":
    try:
        asyncio.run(asyncio.wait_for(advanced(), 15))
    except BaseException as e:  # a timeout included: report what was seen so far
        result["runner_exception"] = repr(e)
elif mode.startswith("roles:"):
    try:
        asyncio.run(asyncio.wait_for(roles(), 10))
    except BaseException as e:  # a timeout included: report what was seen so far
        result["runner_exception"] = repr(e)
else:
    runner = ApplicationRunner(url, "realm1", serializers=[serializers[serializer]])
    try:
        runner.run(Client)
    except Exception as e:
        result["runner_exception"] = repr(e)
print(json.dumps(result))
