//! DNS lookups for the command line tools (`testkey`, `check-domain`): raw TXT records and
//! their tags, through the configured resolver.

/// The answer to a TXT query, for the tools.
#[derive(Debug)]
pub enum TxtAnswer {
    /// Each record's character-strings joined.
    Records(Vec<String>),
    /// NXDOMAIN or no TXT records.
    NoRecords,
    /// Timeout, SERVFAIL, ...: not known either way.
    Error(String),
}

/// Look up the TXT records at `name` through the configured resolver.
pub async fn txt_records(auth: &mail_auth::MessageAuthenticator, name: &str) -> TxtAnswer {
    use mail_auth::hickory_resolver::proto::rr::RData;
    match auth
        .resolver()
        .txt_lookup(format!("{}.", name.trim_end_matches('.')))
        .await
    {
        Ok(l) => TxtAnswer::Records(
            l.answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect(),
        ),
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => TxtAnswer::NoRecords,
        Err(e) => TxtAnswer::Error(e.to_string()),
    }
}

/// `tag=value; ...` pairs of a DKIM key record, names lower-cased, values without whitespace.
pub fn record_tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.chars().filter(|c| !c.is_whitespace()).collect(),
            ))
        })
        .collect()
}
