# The WAMP v1 half of the cross-version test: autobahn 0.8.15 (Python 2.7) beside a v2
# client that has registered com.example.<NS>.mul/fail/both and listens in the chat.
# Usage: python autobahn_v1_peer.py ws://127.0.0.1:PORT/ws NS
# Prints one JSON object with everything it received; the Rust test judges it.
import json
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks

from autobahn.twisted.websocket import connectWS
from autobahn.wamp1.protocol import WampClientFactory, WampClientProtocol

NS = "com.example." + sys.argv[2] + "."
CHAT = "http://clj-wamp-example/event#chat"


class Client(WampClientProtocol):
    def onSessionOpen(self):
        self.run().addErrback(self.fail)

    def fail(self, failure):
        sys.stderr.write("client failed: %s\n" % failure)
        reactor.stop()

    @inlineCallbacks
    def run(self):
        out = {"session_id": self.session_id}
        events = []
        done = Deferred()

        def on_event(topic, event):
            events.append([topic, event])
            if len(events) == 4 and not done.called:
                done.callback(None)

        self.subscribe(CHAT, on_event)
        self.subscribe(NS + "news", on_event)
        # The v2 client's procedures, called over WAMP v1.
        out["mul"] = yield self.call(NS + "mul", 6, 7)
        try:
            yield self.call(NS + "fail", "x")
            out["fail"] = None
        except Exception as e:
            out["fail"] = list(e.args)
        out["both"] = yield self.call(NS + "both")
        # A router handler, for comparison; also a round trip before publishing.
        out["add"] = yield self.call("http://clj-wamp-example/api#add", 1, 2)
        self.publish(CHAT, {"message": "hello v2 from autobahn 0.8"})
        timeout = reactor.callLater(15, done.errback, Exception("no events: %r" % events))
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
