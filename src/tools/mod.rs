//! Command line tools. `sign` and `verify` run a message read from a file through the
//! daemon's own message path ([`crate::pipeline::message::Message`]), without a milter
//! connection.

pub mod check_domain;
pub mod explain;
pub mod intake;
pub mod keygen;
pub mod keys;
pub mod lookup;
pub mod migrate;
pub mod reports;
pub mod testkey;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::pipeline::context::Context;
use crate::pipeline::message::{ConnInfo, EohAnswer, Message};
use crate::pipeline::{Decision, Outbound, Outcome, Reply};

/// Split a message into header fields the way Postfix hands them to a milter (name, the
/// exact text after the colon with LF-separated folding) and the body with CRLF line ends.
/// Header fields as (name, value) byte strings.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

pub fn split_message(raw: &[u8]) -> (Fields, Vec<u8>) {
    let mut fields: Fields = Vec::new();
    let mut pos = 0;
    let mut body_start = raw.len();
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            body_start = end;
            break;
        }
        let field_name = content.iter().position(|&b| b == b':').and_then(|colon| {
            let name = content[..colon].trim_ascii_end();
            (!name.is_empty() && name.iter().all(|b| (33..=126).contains(b))).then_some(colon)
        });
        match (content.first(), fields.last_mut(), field_name) {
            (Some(b' ' | b'\t'), Some((_, v)), _) => {
                v.push(b'\n');
                v.extend_from_slice(content);
            }
            (Some(b' ' | b'\t'), None, _) | (_, _, None) => {
                // As Postfix does: a line that is neither a header field nor a continuation
                // ends the header section and starts the body.
                body_start = pos;
                break;
            }
            (_, _, Some(colon)) => {
                let name = content[..colon].trim_ascii_end().to_vec();
                fields.push((name, content[colon + 1..].to_vec()));
            }
        }
        pos = end;
    }
    let mut body = Vec::with_capacity(raw.len().saturating_sub(body_start) + 64);
    let mut prev = 0u8;
    for &b in &raw[body_start.min(raw.len())..] {
        if b == b'\n' && prev != b'\r' {
            body.push(b'\r');
        }
        body.push(b);
        prev = b;
    }
    (fields, body)
}

/// Why `mailseal sign` or `verify` produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    #[error("nothing to do: {0}")]
    NothingToDo(String),
    #[error("the daemon would refuse this message ({reply}): {why}")]
    Refused { reply: String, why: String },
    #[error("signing failed ({reply}): {summary}")]
    Signing { reply: String, summary: String },
    #[error("the message gave no result")]
    NoResult,
}

async fn run_session(
    config: Config,
    raw: &[u8],
    decision: Decision,
    client_ip: IpAddr,
    helo: &str,
    mail_from: &str,
) -> Result<Outcome, ToolError> {
    let ctx = Arc::new(Context::for_tools(config)?);
    let mut conn = ConnInfo::new(&ctx, Some(client_ip), String::new(), None, true);
    conn.helo = helo.to_string();
    let mut msg = Message::begin(&ctx, &[format!("<{mail_from}>").into_bytes()]);
    let (fields, body) = split_message(raw);
    for (n, v) in &fields {
        msg.header(&ctx, &conn, n, v);
    }
    match msg.end_of_headers(&ctx, &conn, decision, false) {
        EohAnswer::Continue => {}
        EohAnswer::Accept(why) => return Err(ToolError::NothingToDo(why)),
        EohAnswer::Refuse(reply, why) => {
            return Err(ToolError::Refused {
                reply: describe(&reply).unwrap_or_default(),
                why,
            })
        }
    }
    msg.body(&ctx, &body);
    msg.finish(&ctx, &conn).await.ok_or(ToolError::NoResult)
}

fn describe(reply: &Reply) -> Option<String> {
    match reply {
        Reply::Continue => None,
        Reply::Tempfail { code, status, text } | Reply::Reject { code, status, text } => {
            Some(format!("{code} {status} {text}"))
        }
    }
}

/// The header fields the daemon would add to this inbound message.
pub async fn verify_message(
    config: Config,
    raw: &[u8],
    client_ip: IpAddr,
    helo: &str,
    mail_from: &str,
) -> Result<Vec<u8>, ToolError> {
    let o = run_session(config, raw, Decision::Verify, client_ip, helo, mail_from).await?;
    if let Some(r) = describe(&o.reply) {
        eprintln!("the daemon would answer: {r}");
    }
    let out = o.edits.inserted_lines();
    if out.is_empty() {
        eprintln!("{}", o.summary);
    }
    Ok(out.into_bytes())
}

/// The message with the DKIM-Signature field(s) the daemon would add for outbound mail.
pub async fn sign_message(config: Config, raw: &[u8]) -> Result<Vec<u8>, ToolError> {
    let ip = IpAddr::from([127, 0, 0, 1]);
    let o = run_session(
        config,
        raw,
        Decision::Sign(Outbound::InternalHost(ip)),
        ip,
        "localhost",
        "",
    )
    .await?;
    if let Some(reply) = describe(&o.reply) {
        return Err(ToolError::Signing {
            reply,
            summary: o.summary,
        });
    }
    let mut out = o.edits.inserted_lines().into_bytes();
    out.extend_from_slice(raw);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split() {
        let (f, b) = split_message(b"From: a@b\nSubject: x\n\ty\nX-E:\n\nbody\nline\n");
        assert_eq!(f.len(), 3);
        assert_eq!(f[1], (b"Subject".to_vec(), b" x\n\ty".to_vec()));
        assert_eq!(f[2], (b"X-E".to_vec(), b"".to_vec()));
        assert_eq!(b, b"body\r\nline\r\n");
        let (f, b) = split_message(b"A: 1\nnot a field\nB: 2\n\nx\n");
        assert_eq!(f.len(), 1);
        assert_eq!(b, b"not a field\r\nB: 2\r\n\r\nx\r\n");
    }
}
