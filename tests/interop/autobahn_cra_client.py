# WAMP-CRA with the independent autobahn 0.8.15 client (WampCraClientProtocol, Python 2.7)
# against the demo in authenticated mode. One connection per scenario; prints one JSON
# object with what each scenario saw; the Rust test judges it.
import json
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks

from autobahn.twisted.websocket import connectWS
from autobahn.wamp1.protocol import WampClientFactory, WampCraClientProtocol

API = "http://clj-wamp-example/api#"
URL = sys.argv[1]
results = {}


def err(e):
    return list(getattr(e, "args", [str(e)]))


@inlineCallbacks
def scenario(proto, name):
    out = {}
    if name == "before":
        try:
            yield proto.call(API + "add", 1, 2)
            out["add"] = "no error"
        except Exception as e:
            out["add"] = err(e)
    elif name in ("plain", "salted", "wrong"):
        key, secret = {"plain": ("ada", "secret"), "salted": ("carol", "secret"),
                       "wrong": ("ada", "not-the-secret")}[name]
        try:
            out["permissions"] = yield proto.authenticate(authKey=key, authSecret=secret)
        except Exception as e:
            out["auth_error"] = err(e)
        try:
            out["add"] = yield proto.call(API + "add", 40, 2)
        except Exception as e:
            out["add"] = err(e)
    elif name == "anonymous":
        out["permissions"] = yield proto.authenticate()
        out["echo"] = yield proto.call(API + "echo", "hi")
        try:
            yield proto.call(API + "add", 1, 2)
            out["add"] = "no error"
        except Exception as e:
            out["add"] = err(e)
    results[name] = out


SCENARIOS = ["before", "plain", "salted", "anonymous", "wrong"]


def run_next(i=0):
    if i == len(SCENARIOS):
        print(json.dumps(results))
        sys.stdout.flush()
        reactor.stop()
        return
    name = SCENARIOS[i]

    class Client(WampCraClientProtocol):
        def onSessionOpen(self):
            d = scenario(self, name)

            def finish(_):
                self.sendClose()
                reactor.callLater(0, run_next, i + 1)

            def failed(f):
                results[name] = {"client_failure": str(f.value)}
                finish(None)

            d.addCallbacks(finish, failed)

    factory = WampClientFactory(URL, debugWamp=False)
    factory.protocol = Client
    connectWS(factory)


if __name__ == "__main__":
    reactor.callWhenRunning(run_next)
    reactor.callLater(60, reactor.stop)
    reactor.run()
