//! WAMP v2 cryptosign (Ed25519) over real sockets, against the demo's `--auth` router.
#[path = "../examples/demo/app.rs"]
#[allow(dead_code)]
mod app;
mod common;

use std::net::SocketAddr;

use common::{v2::*, *};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::json;
use tower_wamp::core::codec::v2::{Dict, Message, Serializer};

/// Erin's published test seed (README).
const ERIN_SEED: &str = "74a554360f01f441eae521d3b18e07639c4e0e440dd15689468352fe886d7837";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(seed_hex: &str) -> SigningKey {
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(&seed_hex[2 * i..2 * i + 2], 16).unwrap();
    }
    SigningKey::from_bytes(&seed)
}

/// HELLO with cryptosign and `pubkey`; the CHALLENGE's challenge, or the ABORT's reason.
async fn hello(addr: SocketAddr, pubkey: &str) -> (V2, Result<String, String>) {
    let ws = open(addr, Serializer::Json).await;
    let mut c = V2::unjoined(ws, Serializer::Json);
    c.send(&Message::Hello {
        realm: "realm1".into(),
        details: dict(json!({
            "roles": {"caller": {}},
            "authmethods": ["cryptosign"],
            "authextra": {"pubkey": pubkey},
        })),
    })
    .await;
    let got = match c.recv().await {
        Message::Challenge { method, extra } => {
            assert_eq!(method, "cryptosign");
            assert_eq!(extra["channel_binding"], serde_json::Value::Null);
            Ok(extra["challenge"].as_str().unwrap().to_owned())
        }
        Message::Abort { reason, .. } => Err(reason),
        other => panic!("{other:?}"),
    };
    (c, got)
}

async fn authenticate(c: &mut V2, signature: String) -> Result<Dict, String> {
    c.send(&Message::Authenticate {
        signature,
        extra: Dict::new(),
    })
    .await;
    match c.recv().await {
        Message::Welcome { details, .. } => Ok(details),
        Message::Abort { reason, .. } => Err(reason),
        other => panic!("{other:?}"),
    }
}

fn sign(key: &SigningKey, challenge_hex: &str) -> String {
    let challenge: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&challenge_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    format!("{}{}", hex(&key.sign(&challenge).to_bytes()), challenge_hex)
}

#[tokio::test]
async fn erin_signs_in_with_her_key_and_nothing_else_does() {
    let addr = serve_layer(app::layer_for(app::auth_router())).await;
    let erin = key(ERIN_SEED);
    let public = hex(erin.verifying_key().as_bytes());
    assert_eq!(public, hex(&app::ERIN_PUBLIC_KEY), "the README's key pair");

    let (mut c, challenge) = hello(addr, &public).await;
    let challenge = challenge.unwrap();
    let welcome = authenticate(&mut c, sign(&erin, &challenge)).await.unwrap();
    assert_eq!(
        (
            &welcome["authid"],
            &welcome["authrole"],
            &welcome["authmethod"]
        ),
        (&json!("erin"), &json!("user"), &json!("cryptosign"))
    );
    assert!(matches!(
        c.call("com.example.add", json!([1, 2]), json!({})).await,
        Message::Result { .. }
    ));

    // Another key's signature, a signature of something else, garbage: denied.
    let mallory = key(&"22".repeat(32));
    let (mut c, challenge) = hello(addr, &public).await;
    assert_eq!(
        authenticate(&mut c, sign(&mallory, &challenge.unwrap())).await,
        Err("wamp.error.authentication_denied".into())
    );
    let (mut c, _) = hello(addr, &public).await;
    assert_eq!(
        authenticate(&mut c, sign(&erin, &"ab".repeat(32))).await,
        Err("wamp.error.authentication_denied".into())
    );
    let (mut c, _) = hello(addr, &public).await;
    assert_eq!(
        authenticate(&mut c, "00".into()).await,
        Err("wamp.error.authentication_denied".into())
    );
    // Erin's key under another name.
    let ws = open(addr, Serializer::Json).await;
    let mut c = V2::unjoined(ws, Serializer::Json);
    c.send(&Message::Hello {
        realm: "realm1".into(),
        details: dict(json!({
            "roles": {"caller": {}},
            "authmethods": ["cryptosign"],
            "authid": "ada",
            "authextra": {"pubkey": public},
        })),
    })
    .await;
    match c.recv().await {
        Message::Abort { reason, .. } => assert_eq!(reason, "wamp.error.authentication_denied"),
        other => panic!("{other:?}"),
    }
    // An unknown key, and no key at all.
    let (_, refused) = hello(addr, &hex(mallory.verifying_key().as_bytes())).await;
    assert_eq!(refused, Err("wamp.error.no_such_principal".into()));
    let (_, refused) = hello(addr, "not hex").await;
    assert_eq!(refused, Err("wamp.error.invalid_argument".into()));
    let (_, refused) = hello(addr, &format!("+{}", &public[1..])).await;
    assert_eq!(
        refused,
        Err("wamp.error.invalid_argument".into()),
        "strict hex"
    );
}
