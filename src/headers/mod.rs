//! Header fields we write (Authentication-Results, Received-SPF) and the edit list applied at
//! end of message.

pub mod auth_results;
pub mod edits;
pub mod received_spf;

/// A complete header line from mail-auth (`Name: value\r\n`, folded with CRLF) as a field
/// value: the name, the space after the colon and the final CRLF removed, folding kept.
pub fn field_value<'a>(header: &'a str, name: &str) -> &'a str {
    let v = header
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or(header);
    let v = v.strip_suffix("\r\n").unwrap_or(v);
    v.trim_start_matches(' ')
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_value_form() {
        assert_eq!(
            super::field_value("DKIM-Signature: v=1; a=x;\r\n\tb=abc\r\n", "DKIM-Signature"),
            "v=1; a=x;\r\n\tb=abc"
        );
    }
}
