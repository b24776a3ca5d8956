//! The WAMP v1 codec on arbitrary bytes: never panics, and whatever decodes re-encodes to
//! something that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_wamp::core::codec::v1;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(message) = v1::decode(text) {
        let again = v1::encode(&message);
        assert_eq!(v1::decode(&again).as_ref(), Ok(&message), "{text} -> {again}");
    }
});
