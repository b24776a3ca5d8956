//! The session state machine on arbitrary frame sequences (one frame per line; a line
//! starting with 0xFF is a binary frame): never panics, a lax session closes only for a
//! spent budget (1008, 1009), a strict one also on what a lax one ignores, and otherwise
//! both decide alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_wamp::core::session::{Action, SessionState};

fuzz_target!(|data: &[u8]| {
    let mut lax = SessionState::new(false);
    let mut strict = SessionState::new(true);
    for frame in data.split(|b| *b == b'\n') {
        let (a, b) = if frame.first() == Some(&0xFF) {
            (lax.handle_binary(), strict.handle_binary())
        } else {
            let text = String::from_utf8_lossy(frame);
            (lax.handle_text(&text), strict.handle_text(&text))
        };
        assert!(
            !matches!(a, Action::Close { code, .. } if code != 1008 && code != 1009),
            "lax sessions close only for a spent budget: {a:?}"
        );
        match (&a, &b) {
            (Action::Ignore(_), Action::Close { .. }) => {}
            (x, y) => assert_eq!(x, y),
        }
    }
});
