//! Micro-benchmarks: WAMP v1 decode and encode, topic and permission matching.
#![allow(missing_docs)]
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use tower_wamp::core::{
    Message,
    auth::{Action, Permissions},
    codec::v1,
    session::SessionState,
};

fn codec(c: &mut Criterion) {
    let call = r#"[2,"0.arg98rkv3aowp14i","calc:add",23,99,{"k":"some text"}]"#;
    let publish =
        r#"[7,"http://example.com/event#chat",{"from":"abc","message":"hello there"},false]"#;
    c.bench_function("decode CALL", |b| {
        b.iter(|| v1::decode(black_box(call)).unwrap())
    });
    c.bench_function("decode PUBLISH", |b| {
        b.iter(|| v1::decode(black_box(publish)).unwrap())
    });
    let mut state = SessionState::new(false);
    state.handle_text(r#"[1,"calc","http://example.com/calc#"]"#);
    c.bench_function("session: CALL with a CURIE", |b| {
        b.iter(|| state.handle_text(black_box(call)))
    });
    let event = json!({"from": "abc", "message": "hello there", "n": 42});
    c.bench_function("encode EVENT", |b| {
        b.iter(|| {
            v1::encode_event(
                black_box("http://example.com/event#chat"),
                black_box(&event),
            )
        })
    });
    let result = Message::CallResult {
        call_id: "0.arg98rkv3aowp14i".into(),
        result: json!(122),
    };
    c.bench_function("encode CALLRESULT", |b| {
        b.iter(|| v1::encode(black_box(&result)))
    });
}

fn matching(c: &mut Criterion) {
    for patterns in [10, 1_000, 10_000] {
        let mut p = Permissions::none();
        for i in 0..patterns {
            p = p.allow_subscribe(&format!("http://example.com/event#room{i}.*"));
            p = p.allow_subscribe(&format!("http://example.com/topic#{i}"));
        }
        c.bench_function(&format!("prefix match among {patterns} patterns"), |b| {
            b.iter(|| {
                p.allows(
                    Action::Subscribe,
                    black_box("http://example.com/event#room7.general"),
                )
            })
        });
    }
}

criterion_group!(benches, codec, matching);
criterion_main!(benches);
