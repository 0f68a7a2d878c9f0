//! RFC 7208 §9.1 Received-SPF, for the MAIL FROM identity (optional: `[verify] received_spf`).

use super::auth_results::comment;
use crate::results::{AuthResults, Word};

/// The field value (CRLF folding), e.g. `pass (mx.example.net: domain of a@example.com
/// designates 192.0.2.1 as permitted sender) receiver=…; client-ip=…; envelope-from="…";
/// helo=…;`.
pub fn render(r: &AuthResults) -> String {
    let spf = &r.spf;
    let who = comment(&spf.shown);
    let ip = r.client_ip;
    let host = &r.authserv_id;
    let explanation = match spf.result {
        Word::Pass => format!("{host}: domain of {who} designates {ip} as permitted sender"),
        Word::Fail => {
            format!("{host}: domain of {who} does not designate {ip} as permitted sender")
        }
        Word::SoftFail => format!("{host}: domain of {who} reports soft fail for {ip}"),
        Word::Neutral => format!("{host}: domain of {who} reports neutral for {ip}"),
        Word::TempError => format!("{host}: temporary dns error validating {who}"),
        Word::PermError => format!("{host}: unable to verify SPF record for {who}"),
        Word::None => format!("{host}: no SPF records found for {who}"),
    };
    let quoted: String = spf
        .shown
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let helo = if r.helo.is_empty() || r.helo.contains(|c: char| c.is_whitespace() || c == ';') {
        "unknown".to_string()
    } else {
        comment(&r.helo)
    };
    format!(
        "{} ({explanation})\r\n\treceiver={host}; client-ip={ip}; envelope-from=\"{quoted}\"; helo={helo};",
        spf.result
    )
}
