//! KeyTable and SigningTable parsing (input split at the first NUL into the two tables).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailseal::config::tables::SigningTables;

fuzz_target!(|data: &[u8]| {
    let (kt, st) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let dir = std::env::temp_dir().join(format!("mailseal-fuzz-tables-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let (kp, sp) = (dir.join("key.table"), dir.join("signing.table"));
    std::fs::write(&kp, kt).unwrap();
    std::fs::write(&sp, st).unwrap();
    let mut errors = Vec::new();
    let tables = SigningTables::load(&kp, &sp, &mut errors);
    for e in &errors {
        let _ = e.to_string();
    }
    for addr in ["alice@example.com", "", "@", "x@y@z"] {
        let _ = tables.matches(addr).count();
    }
});
