//! SPF posture: the record, its lookup count and void lookups, +all.

use std::collections::HashSet;

use mail_auth::MessageAuthenticator;

use super::{exists, Level, Report};
use crate::spf::record::{is_spf_record, parse, Mechanism, Qualifier, Record};
use crate::tools::lookup::{txt_records as txt, TxtAnswer as Txt};

/// Count DNS-querying terms (RFC 7208 §4.6.4) through includes and redirects.
pub(super) struct SpfWalk {
    lookups: usize,
    voids: usize,
    visited: HashSet<String>,
    problems: Vec<String>,
}

/// The one SPF record at a name (RFC 7208 §4.5), or why there is none to use.
enum Found {
    One(String),
    None,
    Several(usize),
}

fn select(records: &[String]) -> Found {
    let spf: Vec<&String> = records.iter().filter(|r| is_spf_record(r)).collect();
    match spf.as_slice() {
        [] => Found::None,
        [one] => Found::One((*one).clone()),
        many => Found::Several(many.len()),
    }
}

pub(super) fn walk_spf<'a>(
    auth: &'a MessageAuthenticator,
    domain: &'a str,
    record: &'a Record,
    w: &'a mut SpfWalk,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        if depth > 10 || w.lookups > 20 {
            return;
        }
        let followed = record
            .directives
            .iter()
            .filter_map(|d| match &d.mechanism {
                Mechanism::Include(t) => Some(("include", t)),
                _ => None,
            })
            .chain(record.redirect.iter().map(|t| ("redirect", t)));
        let mut targets = Vec::new();
        for (name, spec) in followed {
            w.lookups += 1;
            // A macro cannot be followed without a message.
            if let Some(t) = spec.literal() {
                targets.push((name, t.trim_end_matches('.').to_ascii_lowercase()));
            }
        }
        for d in &record.directives {
            let (spec, mx) = match &d.mechanism {
                Mechanism::A { domain: spec, .. } => (spec.as_ref(), false),
                Mechanism::Mx { domain: spec, .. } => (spec.as_ref(), true),
                Mechanism::Ptr(_) => {
                    w.lookups += 1;
                    w.problems
                        .push("uses ptr, which RFC 7208 §5.5 says not to use".into());
                    continue;
                }
                Mechanism::Exists(_) => {
                    w.lookups += 1;
                    continue;
                }
                _ => continue,
            };
            w.lookups += 1;
            let target = match spec {
                None => Some(domain.to_string()),
                Some(s) => s.literal().map(str::to_string),
            };
            if let Some(t) = target {
                if !exists(auth, &t, mx).await {
                    w.voids += 1;
                }
            }
        }
        for (name, target) in targets {
            if !w.visited.insert(target.clone()) {
                w.problems
                    .push(format!("{name}:{target} is visited twice (loop)"));
                continue;
            }
            match txt(auth, &target).await {
                Txt::Records(r) => match select(&r) {
                    Found::One(text) => match parse(&text) {
                        Ok(rec) => walk_spf(auth, &target, &rec, w, depth + 1).await,
                        Err(e) => w.problems.push(format!(
                            "{name}:{target} has a syntax error (permerror): {e}"
                        )),
                    },
                    Found::None => {
                        w.voids += 1;
                        w.problems
                            .push(format!("{name}:{target} has no SPF record (permerror)"));
                    }
                    Found::Several(_) => w.problems.push(format!(
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
    })
}

pub(super) async fn check_spf(auth: &MessageAuthenticator, domain: &str, r: &mut Report) {
    let Some(records) = r.txt(auth, "spf", domain).await else {
        return;
    };
    let text = match select(&records) {
        Found::None => return r.add("spf", Level::Fail, format!("no SPF record at {domain}")),
        Found::One(text) => text,
        Found::Several(n) => {
            return r.add(
                "spf",
                Level::Fail,
                format!("{n} SPF records at {domain}; exactly one is allowed (permerror)"),
            )
        }
    };
    // The receivers' own parser: what it refuses, they answer permerror for.
    let record = match parse(&text) {
        Ok(record) => record,
        Err(e) => {
            return r.add(
                "spf",
                Level::Fail,
                format!("syntax error in \"{text}\" (permerror): {e}"),
            )
        }
    };
    r.add("spf", Level::Pass, format!("record: {text}"));
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
    let all = record
        .directives
        .iter()
        .find(|d| d.mechanism == Mechanism::All)
        .map(|d| d.qualifier);
    match all {
        Some(Qualifier::Pass) => r.add(
            "spf",
            Level::Fail,
            "+all lets every host on the internet send as this domain",
        ),
        Some(Qualifier::Neutral) => r.add(
            "spf",
            Level::Warn,
            "?all (neutral) gives receivers nothing to act on; use ~all or -all",
        ),
        Some(Qualifier::SoftFail) => r.add("spf", Level::Pass, "~all: softfail for other hosts"),
        Some(Qualifier::Fail) => r.add("spf", Level::Pass, "-all: other hosts fail"),
        None if record.redirect.is_some() => {}
        None => r.add(
            "spf",
            Level::Warn,
            "no all mechanism: other hosts get neutral; end with -all or ~all",
        ),
    }
}
