//! Header reconstruction: a raw message split the way Postfix hands it to a milter, rebuilt
//! into wire form (within its caps: the kept prefix plus From, DKIM-Signature and A-R fields
//! past them), then author-domain normalisation and forged Authentication-Results detection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailseal::headers::actions::Edits;
use mailseal::headers::auth_results::{has_forged, remove_forged};
use mailseal::message::{from_addresses, Author, HeaderBlock, HeaderLimits};

fuzz_target!(|data: &[u8]| {
    let (fields, body) = mailseal::tools::split_message(data);
    let mut h = HeaderBlock::default();
    let limits = HeaderLimits { max_bytes: 16 * 1024, max_fields: 50 };
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
    // Memory stays within twice the byte cap whatever the input.
    assert!(h.bytes() <= 2 * limits.max_bytes, "{} bytes kept", h.bytes());
    let _ = from_addresses(&h);
    let _ = Author::of(&h);
    let mut edits = Edits::default();
    let n = remove_forged(&h, "mx.example.net", &mut edits);
    assert_eq!(n, edits.deletes.len());
    assert_eq!(n > 0, has_forged(&h, "mx.example.net."));
    let _ = body;
});
