//! The WAMP v2 session state machine on arbitrary frame sequences (the first byte picks the
//! serializer; frames are separated by 0xFE 0xFE; a HELLO is welcomed): never panics, and
//! once it has closed the session it acts on nothing more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_wamp::core::{
    codec::v2::Serializer,
    session::v2::{Action, Phase, State},
};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let serializer = Serializer::ALL[usize::from(pick) % Serializer::ALL.len()];
    let mut state = State::new(serializer);
    let mut closed = false;
    let mut frames = Vec::new();
    let mut start = 0;
    for i in 0..rest.len() {
        if rest[i..].starts_with(&[0xFE, 0xFE]) && i >= start {
            frames.push(&rest[start..i]);
            start = i + 2;
        }
    }
    frames.push(&rest[start.min(rest.len())..]);
    for frame in frames {
        let action = state.handle(frame, serializer.is_binary());
        if closed {
            assert_eq!(action, Action::None, "nothing is acted on after the close");
            continue;
        }
        match action {
            Action::Hello { .. } => {
                state.welcome(1, Default::default());
            }
            Action::Close { .. } => {
                closed = true;
                assert_eq!(state.phase(), Phase::Closed);
            }
            _ => {}
        }
    }
});
