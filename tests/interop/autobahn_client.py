# An independent WAMP v1 client (autobahn 0.8.15, Python 2.7) driving the demo.
# Usage: python autobahn_client.py ws://127.0.0.1:PORT/ws
# Prints one JSON object with everything it received; the Rust test judges it.
import json
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks

from autobahn.twisted.websocket import connectWS
from autobahn.wamp1.protocol import WampClientFactory, WampClientProtocol

API = "http://clj-wamp-example/api#"
EV = "http://clj-wamp-example/event#"


def error_args(failure):
    return list(failure.value.args)


class Client(WampClientProtocol):
    def onSessionOpen(self):
        self.run().addErrback(self.fail)

    def fail(self, failure):
        sys.stderr.write("client failed: %s\n" % failure)
        reactor.stop()

    @inlineCallbacks
    def run(self):
        out = {"session_id": self.session_id}
        self.prefix("api", API)
        self.prefix("event", EV)
        out["add"] = yield self.call("api:add", 23, 99)
        out["add_float"] = yield self.call(API + "add", 1.5, 2)
        try:
            yield self.call("api:add", 1, "abc")
            out["add_error"] = None
        except Exception as e:
            out["add_error"] = list(e.args)
        out["echo"] = yield self.call("api:echo", {"k": [1, u"\u00fc"]})
        try:
            yield self.call("api:nope")
            out["notfound"] = None
        except Exception as e:
            out["notfound"] = list(e.args)

        events = []
        done = Deferred()

        def on_event(topic, event):
            events.append([topic, event])
            if len(events) == 2:
                done.callback(None)

        self.subscribe("event:chat", on_event)
        self.subscribe("event:prefix-x", on_event)
        self.subscribe("event:pub-only", on_event)  # denied: never receives
        # A round trip so that the subscriptions are in place before publishing.
        yield self.call("api:echo", 0)
        self.publish("event:pub-only", "nobody hears this")
        self.publish("event:chat", "hello from autobahn")
        self.publish("event:prefix-x", {"n": 1})
        timeout = reactor.callLater(10, done.errback, Exception("no events"))
        yield done
        timeout.cancel()
        out["events"] = events
        print(json.dumps(out))
        sys.stdout.flush()
        reactor.stop()


if __name__ == "__main__":
    factory = WampClientFactory(sys.argv[1], debugWamp=False)
    factory.protocol = Client
    connectWS(factory)
    reactor.callLater(30, reactor.stop)
    reactor.run()
