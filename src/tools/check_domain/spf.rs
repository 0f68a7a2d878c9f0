//! SPF posture: the record, its lookup count and void lookups, +all.

use std::collections::HashSet;

use mail_auth::dns::TxtRecordParser;
use mail_auth::MessageAuthenticator;

use super::{exists, Level, Report};
use crate::tools::lookup::{txt_records as txt, TxtAnswer as Txt};

pub(super) fn spf_records(records: &[String]) -> Vec<&String> {
    records
        .iter()
        .filter(|r| {
            let l = r.trim_start().to_ascii_lowercase();
            l == "v=spf1" || l.starts_with("v=spf1 ")
        })
        .collect()
}

/// Count DNS-querying terms (RFC 7208 §4.6.4) through includes and redirects.
pub(super) struct SpfWalk {
    lookups: usize,
    voids: usize,
    visited: HashSet<String>,
    problems: Vec<String>,
}

pub(super) fn walk_spf<'a>(
    auth: &'a MessageAuthenticator,
    domain: &'a str,
    record: &'a str,
    w: &'a mut SpfWalk,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        if depth > 10 || w.lookups > 20 {
            return;
        }
        for term in record.split_whitespace().skip(1) {
            let t = term
                .trim_start_matches(['+', '-', '~', '?'])
                .to_ascii_lowercase();
            let (name, arg) = match t.split_once([':', '=']) {
                Some((n, a)) => (
                    n.to_string(),
                    Some(a.split('/').next().unwrap_or("").to_string()),
                ),
                None => (t.split('/').next().unwrap_or("").to_string(), None),
            };
            let target = arg
                .clone()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| domain.to_string());
            match name.as_str() {
                "include" | "redirect" => {
                    w.lookups += 1;
                    if target.contains('%') {
                        continue; // macro: cannot be followed without a message
                    }
                    if !w.visited.insert(target.clone()) {
                        w.problems
                            .push(format!("{name}:{target} is visited twice (loop)"));
                        continue;
                    }
                    match txt(auth, &target).await {
                        Txt::Records(r) => match spf_records(&r).as_slice() {
                            [one] => {
                                let one = (*one).clone();
                                walk_spf(auth, &target, &one, w, depth + 1).await;
                            }
                            [] => {
                                w.voids += 1;
                                w.problems
                                    .push(format!("{name}:{target} has no SPF record (permerror)"));
                            }
                            _ => w.problems.push(format!(
                                "{name}:{target} has several SPF records (permerror)"
                            )),
                        },
                        Txt::NoRecords => {
                            w.voids += 1;
                            w.problems
                                .push(format!("{name}:{target} does not exist (permerror)"));
                        }
                        Txt::Error(e) => w.problems.push(format!("{name}:{target}: DNS error {e}")),
                    }
                }
                "a" | "mx" => {
                    w.lookups += 1;
                    if !target.contains('%') && !exists(auth, &target, name == "mx").await {
                        w.voids += 1;
                    }
                }
                "ptr" => {
                    w.lookups += 1;
                    w.problems
                        .push("uses ptr, which RFC 7208 says not to use".into());
                }
                "exists" => w.lookups += 1,
                _ => {}
            }
        }
    })
}

pub(super) async fn check_spf(auth: &MessageAuthenticator, domain: &str, r: &mut Report) {
    let Some(records) = r.txt(auth, "spf", domain).await else {
        return;
    };
    let spf = spf_records(&records);
    let record = match spf.as_slice() {
        [] => return r.add("spf", Level::Fail, format!("no SPF record at {domain}")),
        [one] => (*one).clone(),
        many => {
            return r.add(
                "spf",
                Level::Fail,
                format!(
                    "{} SPF records at {domain}; exactly one is allowed (permerror)",
                    many.len()
                ),
            )
        }
    };
    if let Err(e) = mail_auth::spf::SpfRecord::parse(record.as_bytes()) {
        return r.add(
            "spf",
            Level::Fail,
            format!("syntax error in \"{record}\": {e}"),
        );
    }
    r.add("spf", Level::Pass, format!("record: {record}"));
    let mut w = SpfWalk {
        lookups: 0,
        voids: 0,
        visited: HashSet::from([domain.to_string()]),
        problems: Vec::new(),
    };
    walk_spf(auth, domain, &record, &mut w, 0).await;
    let level = if w.lookups > 10 {
        Level::Fail
    } else if w.lookups >= 8 {
        Level::Warn
    } else {
        Level::Pass
    };
    r.add(
        "spf",
        level,
        format!("{} DNS-querying terms (limit 10)", w.lookups),
    );
    let level = if w.voids > 2 {
        Level::Fail
    } else if w.voids > 0 {
        Level::Warn
    } else {
        Level::Pass
    };
    r.add("spf", level, format!("{} void lookups (limit 2)", w.voids));
    for p in w.problems {
        r.add("spf", Level::Fail, p);
    }
    let lower = record.to_ascii_lowercase();
    let all = lower
        .split_whitespace()
        .find(|t| t.trim_start_matches(['+', '-', '~', '?']) == "all");
    match all {
        Some("+all") | Some("all") => r.add(
            "spf",
            Level::Fail,
            "+all lets every host on the internet send as this domain",
        ),
        Some("?all") => r.add(
            "spf",
            Level::Warn,
            "?all (neutral) gives receivers nothing to act on; use ~all or -all",
        ),
        Some("~all") => r.add("spf", Level::Pass, "~all: softfail for other hosts"),
        Some(_) => r.add("spf", Level::Pass, "-all: other hosts fail"),
        None if lower.contains("redirect=") => {}
        None => r.add(
            "spf",
            Level::Warn,
            "no all mechanism: other hosts get neutral; end with -all or ~all",
        ),
    }
}
