//! The milter packet decoder path: raw bytes → indymilter's packet reader and command
//! parser → the header and envelope handling mailseal does with each command.
#![no_main]

use indymilter::message::command::Command;
use libfuzzer_sys::fuzz_target;
use mailseal::message::{envelope_address, from_addresses, HeaderBlock, HeaderLimits};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut cursor = std::io::Cursor::new(data);
        let mut headers = HeaderBlock::default();
        let limits = HeaderLimits { max_bytes: 64 * 1024, max_fields: 100 };
        for _ in 0..1000 {
            let Ok(msg) = indymilter::message::read(&mut cursor).await else { break };
            match Command::parse_command(msg) {
                Ok(Command::Header(h)) => {
                    headers.push(h.name.as_bytes(), h.value.as_bytes(), true, limits);
                }
                Ok(Command::Mail(env)) => {
                    if let Some(a) = env.args.first() {
                        let _ = envelope_address(a.as_bytes());
                    }
                }
                Ok(_) | Err(_) => {}
            }
        }
        let _ = from_addresses(&headers);
        for (_, v) in headers.iter() {
            let _ = mailseal::headers::auth_results::authserv_id_of(v);
        }
    });
});
