# autobahn 0.8.15 (the reference WAMP v1 router, Python 2.7 on Twisted) serving the
# benchmark's procedure and topics. Usage: python autobahn_server.py PORT
import sys

from twisted.internet import reactor

from autobahn.twisted.websocket import listenWS
from autobahn.wamp1.protocol import WampServerFactory, WampServerProtocol, exportRpc


class Api(object):
    @exportRpc("echo")
    def echo(self, value):
        return value


class Router(WampServerProtocol):
    def onSessionOpen(self):
        self.registerForRpc(Api(), "urn:bench:")
        self.registerForPubSub("urn:bench:fan")
        self.registerForPubSub("urn:bench:idle:", True)


if __name__ == "__main__":
    port = int(sys.argv[1])
    factory = WampServerFactory("ws://127.0.0.1:%d" % port, debugWamp=False)
    factory.protocol = Router
    listenWS(factory, interface="127.0.0.1")
    print("ready")
    sys.stdout.flush()
    reactor.run()
