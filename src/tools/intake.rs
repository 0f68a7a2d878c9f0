//! `mailseal reports import | rejected | summary`: report intake ([`crate::intake`]) from
//! the command line.

use std::fmt::Write;
use std::io::Read;
use std::path::PathBuf;

use crate::config::Config;
use crate::intake::{self, Fate, Limits};
use crate::report::store::Store;

fn store(config: &Config) -> Result<Store, String> {
    let spec = config
        .reports
        .store()
        .ok_or("[reports] store is not set: intake keeps reports there")?;
    Store::open(&spec).map_err(|e| e.to_string())
}

/// `reports import`: every input read and kept. Returns the listing and whether nothing was
/// refused.
pub fn import(config: &Config, inputs: &[PathBuf]) -> Result<(String, bool), String> {
    let domains = intake::our_domains(config)?;
    let limits = Limits::of(config);
    let mut store = store(config)?;
    let now = crate::report::now();
    let mut out = String::new();
    let mut counts: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let stdin = [PathBuf::from("-")];
    let inputs = if inputs.is_empty() {
        &stdin[..]
    } else {
        inputs
    };
    for input in inputs {
        let files = if input.as_os_str() == "-" {
            vec![input.clone()]
        } else {
            intake::files_of(input).map_err(|e| format!("{}: {e}", input.display()))?
        };
        for file in files {
            let origin = file.display().to_string();
            // Read at most a byte past the largest input anything could be, so a huge file
            // is refused without being read whole.
            let cap = limits.max_message_size.max(limits.max_report_size) as u64 + 1;
            let mut data = Vec::new();
            let read = if input.as_os_str() == "-" {
                std::io::stdin().take(cap).read_to_end(&mut data)
            } else {
                std::fs::File::open(&file).and_then(|f| f.take(cap).read_to_end(&mut data))
            };
            if let Err(e) = read {
                let _ = writeln!(out, "{origin}: cannot read: {e}");
                *counts.entry("unreadable").or_default() += 1;
                continue;
            }
            let items = if data.len() as u64 >= cap {
                vec![intake::refused(
                    format!("larger than {} bytes", cap - 1),
                    &data,
                )]
            } else {
                intake::read_input(&data, &limits)
            };
            for (label, fate) in intake::keep(&mut store, items, &origin, &domains, now)
                .map_err(|e| e.to_string())?
            {
                *counts.entry(fate.label()).or_default() += 1;
                let _ = match &fate {
                    Fate::Refused(why) => writeln!(out, "{origin}: refused: {why}"),
                    Fate::OtherDomain(d) => {
                        writeln!(
                            out,
                            "{origin}: {label}: about {d}, not one of ours: dropped"
                        )
                    }
                    f => writeln!(out, "{origin}: {label}: {}", f.label()),
                };
            }
        }
    }
    let purged = store
        .intake_purge(now - config.intake.retention.as_secs() as i64)
        .map_err(|e| e.to_string())?;
    let total: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(
        out,
        "{}{}",
        if total.is_empty() {
            "nothing read".to_string()
        } else {
            total.join(", ")
        },
        if purged > 0 {
            format!("; {purged} report(s) past the retention deleted")
        } else {
            String::new()
        }
    );
    let ok = !counts.contains_key("refused") && !counts.contains_key("unreadable");
    Ok((out, ok))
}

/// `reports rejected`.
pub fn rejected(config: &Config, limit: i64, show: bool) -> Result<String, String> {
    let list = store(config)?
        .intake_rejected_list(limit)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    for r in &list {
        let _ = writeln!(
            out,
            "{} {:02}:{:02}  {}  {} bytes  {}",
            crate::report::iso_date(r.imported),
            r.imported.rem_euclid(86_400) / 3600,
            r.imported.rem_euclid(3600) / 60,
            r.origin,
            r.size,
            r.reason
        );
        if show {
            let text = String::from_utf8_lossy(&r.sample[..r.sample.len().min(2048)])
                .replace(|c: char| c.is_control() && c != '\n', ".");
            for line in text.lines().take(20) {
                let _ = writeln!(out, "    | {line}");
            }
        }
    }
    if list.is_empty() {
        out.push_str("nothing refused\n");
    }
    Ok(out)
}

/// `reports summary`.
pub fn summary(config: &Config, domain: Option<&str>, days: Option<i64>) -> Result<String, String> {
    let since = days.map_or(0, |d| crate::report::now() - d * 86_400);
    let list = store(config)?
        .intake_summary(domain, since)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    let pct = |n: i64, of: i64| {
        if of == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", n as f64 * 100.0 / of as f64)
        }
    };
    for s in &list {
        let _ = writeln!(out, "{}", s.domain);
        if s.reports > 0 {
            let _ = writeln!(
                out,
                "  aggregate reports {}, messages {}, DMARC pass {} ({})",
                s.reports,
                s.messages,
                s.dmarc_pass,
                pct(s.dmarc_pass, s.messages)
            );
        }
        if !s.dispositions.is_empty() {
            let d: Vec<String> = s
                .dispositions
                .iter()
                .map(|(d, n)| format!("{d} {n}"))
                .collect();
            let _ = writeln!(out, "  dispositions: {}", d.join(", "));
        }
        if !s.sources.is_empty() {
            let _ = writeln!(
                out,
                "  sources (IP, messages, SPF aligned pass, DKIM aligned pass):"
            );
            for src in s.sources.iter().take(20) {
                let _ = writeln!(
                    out,
                    "    {:<40} {:>8}  spf {:>6}  dkim {:>6}",
                    src.ip,
                    src.messages,
                    pct(src.spf_aligned_pass, src.messages),
                    pct(src.dkim_aligned_pass, src.messages)
                );
            }
            if s.sources.len() > 20 {
                let _ = writeln!(out, "    … {} more", s.sources.len() - 20);
            }
        }
        if !s.tls.is_empty() {
            let total = |k: &str| {
                s.tls
                    .iter()
                    .filter(|(_, kind, _)| kind == k)
                    .map(|(_, _, n)| n)
                    .sum::<i64>()
            };
            let types: Vec<String> = s
                .tls
                .iter()
                .filter(|(_, kind, _)| !kind.starts_with("total-"))
                .map(|(_, kind, n)| format!("{kind} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "  TLS-RPT sessions: {} successful, {} failed{}",
                total("total-success"),
                total("total-failure"),
                if types.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", types.join(", "))
                }
            );
        }
        if s.failures > 0 {
            let _ = writeln!(out, "  failure reports: {}", s.failures);
        }
    }
    if list.is_empty() {
        out.push_str("no reports kept\n");
    }
    Ok(out)
}
