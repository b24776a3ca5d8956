//! A WAMP v2 test client over a real WebSocket, in any serializer.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message as Ws, client::IntoClientRequest, http::HeaderValue};
use tower_wamp::core::codec::v2::{Dict, Message, Serializer, decode, encode};

use super::WAIT;

pub fn dict(v: Value) -> Dict {
    v.as_object().cloned().unwrap_or_default()
}

pub struct V2 {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pub serializer: Serializer,
    pub session: u64,
    pub welcome: Dict,
    pub next: u64,
}

pub async fn open(
    addr: SocketAddr,
    serializer: Serializer,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(serializer.subprotocol()),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        serializer.subprotocol()
    );
    ws
}

impl V2 {
    /// A connection that has not said HELLO yet.
    pub fn unjoined(
        ws: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        serializer: Serializer,
    ) -> Self {
        Self {
            ws,
            serializer,
            session: 0,
            welcome: Dict::new(),
            next: 0,
        }
    }

    pub async fn join(addr: SocketAddr, serializer: Serializer) -> Self {
        Self::join_with(addr, serializer, "realm1", json!({}))
            .await
            .unwrap()
    }

    /// HELLO with extra details; `Err` with the ABORT reason.
    pub async fn join_with(
        addr: SocketAddr,
        serializer: Serializer,
        realm: &str,
        extra: Value,
    ) -> Result<Self, String> {
        let ws = open(addr, serializer).await;
        let mut c = Self::unjoined(ws, serializer);
        let mut details = dict(json!({"roles": {"caller": {}, "subscriber": {}, "publisher": {}}}));
        details.extend(dict(extra));
        c.send(&Message::Hello {
            realm: realm.into(),
            details,
        })
        .await;
        c.welcomed().await.map(|()| c)
    }

    /// Takes the WELCOME that opens the session; `Err` with an ABORT's reason.
    pub async fn welcomed(&mut self) -> Result<(), String> {
        match self.recv().await {
            Message::Welcome { session, details } => {
                self.session = session;
                self.welcome = details;
                Ok(())
            }
            Message::Abort { reason, .. } => Err(reason),
            other => panic!("{other:?}"),
        }
    }

    pub fn request(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub async fn send(&mut self, m: &Message) {
        let bytes = encode(self.serializer, m);
        let frame = if self.serializer.is_binary() {
            Ws::binary(bytes)
        } else {
            Ws::text(String::from_utf8(bytes).unwrap())
        };
        self.ws.send(frame).await.unwrap();
    }

    pub async fn recv(&mut self) -> Message {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a message")
                .expect("connection ended")
                .expect("websocket error");
            match frame {
                Ws::Text(t) => {
                    assert!(
                        !self.serializer.is_binary(),
                        "a text frame on {:?}",
                        self.serializer
                    );
                    return decode(self.serializer, t.as_bytes()).unwrap();
                }
                Ws::Binary(b) => {
                    assert!(self.serializer.is_binary(), "a binary frame on json");
                    return decode(self.serializer, &b).unwrap();
                }
                Ws::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    pub async fn call(&mut self, procedure: &str, args: Value, kwargs: Value) -> Message {
        let request = self.request();
        self.send(&Message::Call {
            request,
            options: Dict::new(),
            procedure: procedure.into(),
            args: args.as_array().cloned().unwrap_or_default(),
            kwargs: dict(kwargs),
        })
        .await;
        self.recv().await
    }

    pub async fn subscribe(&mut self, topic: &str) -> Message {
        let request = self.request();
        self.send(&Message::Subscribe {
            request,
            options: Dict::new(),
            topic: topic.into(),
        })
        .await;
        self.recv().await
    }

    pub async fn publish(&mut self, topic: &str, args: Value, kwargs: Value, options: Value) {
        let request = self.request();
        self.send(&Message::Publish {
            request,
            options: dict(options),
            topic: topic.into(),
            args: args.as_array().cloned().unwrap_or_default(),
            kwargs: dict(kwargs),
        })
        .await;
    }
}

/// Joins realm1 with ticket authentication (json); `Err` with the ABORT reason.
pub async fn ticket_join(addr: SocketAddr, authid: &str, ticket: &str) -> Result<V2, String> {
    let ws = open(addr, Serializer::Json).await;
    let mut c = V2::unjoined(ws, Serializer::Json);
    c.send(&Message::Hello {
        realm: "realm1".into(),
        details: dict(
            json!({"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": authid}),
        ),
    })
    .await;
    match c.recv().await {
        Message::Challenge { method, .. } => assert_eq!(method, "ticket"),
        Message::Abort { reason, .. } => return Err(reason),
        other => panic!("{other:?}"),
    }
    c.send(&Message::Authenticate {
        signature: ticket.into(),
        extra: Dict::new(),
    })
    .await;
    c.welcomed().await.map(|()| c)
}
