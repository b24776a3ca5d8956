//! Property tests: no panic on any input, encode/decode round trips, CURIE resolution.
use proptest::prelude::*;
use serde_json::Value;
use tower_wamp::core::{
    Exclude, Message, SessionId,
    codec::v1,
    curie::Prefixes,
    session::{Action, SessionState},
};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn ids() -> impl Strategy<Value = Vec<SessionId>> {
    prop::collection::vec("[A-Za-z0-9_-]{1,16}".prop_map(SessionId::from), 0..4)
}

fn client_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (".*", ".*").prop_map(|(prefix, uri)| Message::Prefix { prefix, uri }),
        (".*", ".*", prop::collection::vec(json_value(), 0..5)).prop_map(
            |(call_id, procedure, args)| Message::Call {
                call_id,
                procedure,
                args
            }
        ),
        ".*".prop_map(|topic| Message::Subscribe { topic }),
        ".*".prop_map(|topic| Message::Unsubscribe { topic }),
        (
            ".*",
            json_value(),
            prop_oneof![
                Just(Exclude::Unspecified),
                any::<bool>().prop_map(Exclude::ExcludeMe),
                ids().prop_map(Exclude::List)
            ],
            prop::option::of(ids())
        )
            .prop_map(|(topic, event, exclude, eligible)| {
                // Every combination round-trips: `null`, a boolean or a list before eligible.
                Message::Publish {
                    topic,
                    event,
                    exclude,
                    eligible,
                }
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoding_any_text_never_panics(text in ".*") {
        let _ = v1::decode(&text);
        let _ = SessionState::new(true).handle_text(&text);
    }

    #[test]
    fn decoding_any_json_array_never_panics(items in prop::collection::vec(json_value(), 0..7), ty in -2i64..12) {
        let mut frame = vec![Value::from(ty)];
        frame.extend(items);
        let text = Value::Array(frame).to_string();
        let _ = v1::decode(&text);
        let mut state = SessionState::new(false);
        prop_assert!(
            !matches!(state.handle_text(&text), Action::Close { .. }),
            "lax sessions never close"
        );
    }

    #[test]
    fn client_messages_round_trip(m in client_message()) {
        let text = v1::encode(&m);
        prop_assert_eq!(v1::decode(&text).unwrap(), m);
    }

    #[test]
    fn curies_expand_at_the_first_colon(prefix in "[a-z]{1,8}", uri in "[a-z:/#.]{0,20}", rest in ".{0,20}") {
        let mut p = Prefixes::default();
        p.insert(prefix.clone(), uri.clone());
        let curie = format!("{prefix}:{rest}");
        let expanded = format!("{uri}{rest}");
        prop_assert_eq!(p.resolve(&curie), expanded.as_str());
        let unknown = format!("{prefix}x:{rest}");
        prop_assert_eq!(p.resolve(&unknown), unknown.as_str());
    }
}
