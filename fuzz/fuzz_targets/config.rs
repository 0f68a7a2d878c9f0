//! The configuration loader: any text gives a Config or errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match mailseal::config::Config::from_toml(std::path::Path::new("/nonexistent/fuzz.toml"), text) {
            Ok(c) => {
                let _ = c.unsafe_file_warnings();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
