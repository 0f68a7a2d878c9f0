//! Header reconstruction: a raw message split the way Postfix hands it to a milter, rebuilt
//! into wire form, then From parsing and forged Authentication-Results detection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailseal::headers::actions::Edits;
use mailseal::headers::auth_results::remove_forged;
use mailseal::message::{from_addresses, HeaderBlock, HeaderLimits};

fuzz_target!(|data: &[u8]| {
    let (fields, body) = mailseal::tools::split_message(data);
    let mut h = HeaderBlock::default();
    let limits = HeaderLimits { max_bytes: 256 * 1024, max_fields: 500 };
    for (n, v) in &fields {
        h.push(n, v, data.first().is_some_and(|b| b & 1 == 1), limits);
    }
    // Rebuilt header lines never contain a bare LF.
    let raw = h.raw();
    for (i, b) in raw.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && raw[i - 1] == b'\r', "bare LF in rebuilt headers");
        }
    }
    let _ = from_addresses(&h);
    let mut edits = Edits::default();
    let n = remove_forged(&h, "mx.example.net", &mut edits);
    assert_eq!(n, edits.deletes.len());
    let _ = body;
});
