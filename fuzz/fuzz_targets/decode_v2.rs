//! The WAMP v2 codec on arbitrary bytes in each serializer (the first byte picks it): never
//! panics, and whatever decodes re-encodes, in every serializer, to something that decodes
//! to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_wamp::core::codec::v2::{Serializer, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else { return };
    let serializer = Serializer::ALL[usize::from(pick) % Serializer::ALL.len()];
    let _ = tower_wamp::core::codec::v2::decoded_size(serializer, bytes);
    if let Ok(message) = decode(serializer, bytes) {
        for other in Serializer::ALL {
            let again = encode(other, &message);
            assert_eq!(decode(other, &again).as_ref(), Ok(&message), "{serializer:?} -> {other:?}");
        }
    }
});
