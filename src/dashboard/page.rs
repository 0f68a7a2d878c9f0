//! The dashboard page: per domain and range, what receivers reported next to what we
//! signed, drawn on the server (HTML and inline SVG; every value from a report escaped).

use std::fmt::Write;
use std::net::IpAddr;
use std::time::Duration;

use crate::pipeline::context::Context;
use crate::report::store::dashboard::{Day, SelectorRow, SourceRow, TlsRow};
use crate::report::store::Store;

/// The ranges offered (days).
pub const RANGES: [i64; 4] = [7, 30, 90, 365];
/// Most sources shown (failing first), and most reverse names looked up.
const SOURCES: i64 = 50;
const REVERSE_LOOKUPS: usize = 20;

/// What the page was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub domain: Option<String>,
    pub days: i64,
}

impl Query {
    pub fn parse(query: &str) -> Query {
        let mut q = Query {
            domain: None,
            days: 30,
        };
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            match k {
                "domain" => {
                    let d = v.trim().to_ascii_lowercase();
                    if !d.is_empty()
                        && d.len() < 254
                        && d.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
                    {
                        q.domain = Some(d);
                    }
                }
                "days" => {
                    if let Ok(n) = v.parse::<i64>() {
                        if RANGES.contains(&n) {
                            q.days = n;
                        }
                    }
                }
                _ => {}
            }
        }
        q
    }
}

/// Everything on the page.
#[derive(Debug, Default)]
pub struct Data {
    pub domains: Vec<String>,
    pub domain: String,
    pub days: i64,
    pub since: i64,
    pub daily: Vec<Day>,
    pub dispositions: Vec<(String, i64)>,
    pub sources: Vec<SourceRow>,
    pub selectors: Vec<SelectorRow>,
    pub tls: Vec<TlsRow>,
    pub policy: Option<(String, i64)>,
    /// Reverse names found for the first sources.
    pub names: Vec<(String, String)>,
}

/// What the store says for the page (everything but reverse names).
pub fn read(store: &mut Store, q: &Query, our: &[String], now: i64) -> Result<Data, String> {
    let e = |e: crate::report::store::StoreError| e.to_string();
    let mut domains = store.dashboard_domains().map_err(e)?;
    for d in our {
        if !domains.contains(d) {
            domains.push(d.clone());
        }
    }
    domains.sort();
    let domain = q
        .domain
        .clone()
        .filter(|d| domains.contains(d))
        .or_else(|| domains.first().cloned())
        .unwrap_or_default();
    let since = crate::report::day_start(now) - (q.days - 1) * 86_400;
    Ok(Data {
        daily: store.dashboard_days(&domain, since).map_err(e)?,
        dispositions: store.dashboard_dispositions(&domain, since).map_err(e)?,
        sources: store
            .dashboard_sources(&domain, since, SOURCES)
            .map_err(e)?,
        selectors: store.dashboard_selectors(&domain, since).map_err(e)?,
        tls: store.dashboard_tls(&domain, since).map_err(e)?,
        policy: store.dashboard_policy(&domain).map_err(e)?,
        domains,
        domain,
        days: q.days,
        since,
        names: Vec::new(),
    })
}

/// Build the page: the store read on a blocking thread, reverse names looked up (bounded in
/// number and time), then drawn.
pub async fn build(ctx: &Context, q: &Query) -> Result<String, String> {
    let spec = ctx
        .config
        .reports
        .store()
        .ok_or("[reports] store is not set")?;
    let our = crate::intake::our_domains(&ctx.config).unwrap_or_default();
    let q2 = q.clone();
    let now = crate::report::now();
    let mut data = tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&spec).map_err(|e| e.to_string())?;
        read(&mut store, &q2, &our, now)
    })
    .await
    .map_err(|e| e.to_string())??;
    data.names = reverse_names(ctx, &data.sources).await;
    Ok(render(ctx, &data))
}

/// Reverse names already looked up (none found is kept too), for an hour: a page shown
/// again does not wait for DNS. Bounded by [`NAMES_KEPT`].
static NAMES: std::sync::Mutex<Option<std::collections::HashMap<IpAddr, (String, i64)>>> =
    std::sync::Mutex::new(None);
const NAMES_KEPT: usize = 10_000;
/// How long a page waits for reverse names it does not know yet.
const NAMES_WAIT: Duration = Duration::from_millis(300);

async fn reverse_names(ctx: &Context, sources: &[SourceRow]) -> Vec<(String, String)> {
    let now = crate::report::now();
    let ips: Vec<IpAddr> = sources
        .iter()
        .take(REVERSE_LOOKUPS)
        .filter_map(|s| s.ip.parse().ok())
        .collect();
    let known = |ip: &IpAddr| -> Option<String> {
        let names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        names
            .as_ref()
            .and_then(|m| m.get(ip))
            .filter(|(_, until)| *until > now)
            .map(|(n, _)| n.clone())
    };
    let missing: Vec<IpAddr> = ips
        .iter()
        .filter(|ip| known(ip).is_none())
        .copied()
        .collect();
    if !missing.is_empty() {
        if let Ok(auth) = crate::dns::authenticator(&ctx.config.dns) {
            let lookups = missing.iter().map(|ip| {
                let auth = &auth;
                async move {
                    let name = auth
                        .resolver()
                        .reverse_lookup(*ip)
                        .await
                        .ok()
                        .and_then(|r| r.answers().first().map(|a| a.data.to_string()))
                        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                        .unwrap_or_default();
                    (*ip, name)
                }
            });
            let found = tokio::time::timeout(NAMES_WAIT, futures_util::future::join_all(lookups))
                .await
                .unwrap_or_default();
            let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
            let m = names.get_or_insert_with(Default::default);
            if m.len() + found.len() > NAMES_KEPT {
                m.clear();
            }
            for (ip, name) in found {
                m.insert(ip, (name, now + 3600));
            }
        }
    }
    ips.iter()
        .filter_map(|ip| {
            known(ip)
                .filter(|n| !n.is_empty())
                .map(|n| (ip.to_string(), n))
        })
        .collect()
}

/// Escape a value for HTML (every value from a report may be hostile); XML's escaping is
/// HTML's too.
use crate::report::xml::escape as esc;

fn pct(n: i64, of: i64) -> String {
    if of == 0 {
        "–".into()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / of as f64)
    }
}

/// One-line advice where the data supports it.
fn guidance(d: &Data, now: i64) -> Option<String> {
    let total: i64 = d.daily.iter().map(|x| x.messages).sum();
    let pass: i64 = d.daily.iter().map(|x| x.pass).sum();
    if total < 100 {
        return None;
    }
    let rate = pass as f64 * 100.0 / total as f64;
    let (p, since) = d.policy.clone()?;
    let for_days = (now - since) / 86_400;
    Some(match p.as_str() {
        "none" if for_days >= 90 && rate >= 99.5 => format!(
            "p=none for {for_days} days with {rate:.1}% aligned pass: ready for quarantine."
        ),
        "quarantine" if for_days >= 30 && rate >= 99.5 => format!(
            "p=quarantine for {for_days} days with {rate:.1}% aligned pass: ready for reject."
        ),
        _ if rate < 95.0 => format!(
            "{rate:.1}% aligned pass: look at the failing sources below before tightening the policy (p={p})."
        ),
        _ => format!("p={p}, {rate:.1}% aligned pass over {} days.", d.days),
    })
}

/// Daily volume as bars (pass green over fail red), the pass rate in each bar's title.
fn daily_chart(d: &Data) -> String {
    let days = d.days as usize;
    let (w, h) = (720.0_f64, 160.0_f64);
    let max = d.daily.iter().map(|x| x.messages).max().unwrap_or(0).max(1) as f64;
    let bw = w / days as f64;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"messages per day\">",
        h + 20.0
    );
    for x in &d.daily {
        let i = ((x.day - d.since) / 86_400) as f64;
        if i < 0.0 || i >= days as f64 {
            continue;
        }
        let total_h = x.messages as f64 / max * h;
        let pass_h = x.pass as f64 / max * h;
        let _ = write!(
            svg,
            "<g><title>{}: {} messages, {} DMARC pass</title><rect class=\"fail\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/><rect class=\"pass\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/></g>",
            crate::report::iso_date(x.day),
            x.messages,
            pct(x.pass, x.messages),
            i * bw,
            h - total_h,
            (bw - 1.0).max(0.5),
            total_h - pass_h,
            i * bw,
            h - pass_h,
            (bw - 1.0).max(0.5),
            pass_h
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\">{}</text><text x=\"{w}\" y=\"{}\" text-anchor=\"end\">{}</text></svg>",
        h + 15.0,
        crate::report::iso_date(d.since),
        h + 15.0,
        crate::report::iso_date(d.since + (d.days - 1) * 86_400)
    );
    svg
}

/// A horizontal bar split by share.
fn share_bar(parts: &[(String, i64)]) -> String {
    let total: i64 = parts.iter().map(|p| p.1).sum::<i64>().max(1);
    let mut svg = String::from("<svg class=\"bar\" viewBox=\"0 0 720 24\" role=\"img\">");
    let mut x = 0.0;
    for (name, n) in parts {
        let w = *n as f64 / total as f64 * 720.0;
        let _ = write!(
            svg,
            "<g><title>{}: {n}</title><rect class=\"d-{}\" x=\"{x:.1}\" y=\"0\" width=\"{w:.1}\" height=\"24\"/></g>",
            esc(name),
            esc(name)
        );
        x += w;
    }
    svg.push_str("</svg>");
    svg
}

fn render(ctx: &Context, d: &Data) -> String {
    let now = crate::report::now();
    let total: i64 = d.daily.iter().map(|x| x.messages).sum();
    let pass: i64 = d.daily.iter().map(|x| x.pass).sum();
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mailseal: {}</title><link rel=\"stylesheet\" href=\"/style.css\"></head><body><header><h1>mailseal</h1><form method=\"get\" action=\"/\"><select name=\"domain\">",
        esc(&d.domain)
    );
    for dom in &d.domains {
        let _ = write!(
            h,
            "<option{}>{}</option>",
            if *dom == d.domain { " selected" } else { "" },
            esc(dom)
        );
    }
    h.push_str("</select><select name=\"days\">");
    for r in RANGES {
        let _ = write!(
            h,
            "<option value=\"{r}\"{}>last {r} days</option>",
            if r == d.days { " selected" } else { "" }
        );
    }
    h.push_str("</select><button>Show</button></form></header><main>");
    let _ = write!(
        h,
        "<section><h2>{} — last {} days</h2><p class=\"figures\"><span id=\"messages\">{total}</span> messages reported, <span id=\"pass-rate\">{}</span> DMARC pass",
        esc(&d.domain),
        d.days,
        pct(pass, total)
    );
    if let Some((p, _)) = &d.policy {
        let _ = write!(h, ", published p=<span id=\"policy\">{}</span>", esc(p));
    }
    h.push_str("</p>");
    if let Some(g) = guidance(d, now) {
        let _ = write!(h, "<p class=\"guidance\" id=\"guidance\">{}</p>", esc(&g));
    }
    h.push_str(&daily_chart(d));
    h.push_str("</section>");

    // Dispositions.
    h.push_str("<section><h2>What receivers did</h2>");
    if d.dispositions.is_empty() {
        h.push_str("<p>No aggregate reports in this range.</p>");
    } else {
        h.push_str(&share_bar(&d.dispositions));
        h.push_str("<table id=\"dispositions\"><tr><th>disposition</th><th>messages</th><th>share</th></tr>");
        for (name, n) in &d.dispositions {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{n}</td><td class=\"n\">{}</td></tr>",
                esc(name),
                pct(*n, total)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");

    // Our signatures as receivers saw them.
    h.push_str("<section><h2>Our signatures as receivers saw them</h2><table id=\"selectors\"><tr><th>selector</th><th>algorithm</th><th>signed by us</th><th>reported pass</th><th>reported fail</th><th></th></tr>");
    let active: Vec<&str> = ctx
        .config
        .tables
        .keys
        .iter()
        .filter(|k| k.domain.as_deref() == Some(d.domain.as_str()))
        .map(|k| k.selector.as_str())
        .collect();
    for s in &d.selectors {
        let reported = s.reported_pass + s.reported_fail;
        let note = if s.selector.is_empty() {
            "mail receivers saw without our signature".to_string()
        } else if s.signed == 0 && !active.contains(&s.selector.as_str()) {
            "still seen, not signed with in this range (retired?)".to_string()
        } else if s.algorithm == "ed25519" && s.signed > 0 && s.reported_pass == 0 {
            "signed, but no receiver reported it verified (Ed25519 is not checked everywhere)"
                .to_string()
        } else if s.reported_fail > 0 {
            format!("{} of reports fail", pct(s.reported_fail, reported))
        } else {
            String::new()
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            if s.selector.is_empty() {
                "(unsigned)".to_string()
            } else {
                esc(&s.selector)
            },
            esc(&s.algorithm),
            s.signed,
            s.reported_pass,
            s.reported_fail,
            esc(&note)
        );
    }
    h.push_str("</table></section>");

    // Sources.
    let forwarder = |name: &str| {
        ctx.config
            .dashboard
            .forwarders
            .iter()
            .any(|f| name.ends_with(f.trim_start_matches('*')))
    };
    let name_of = |ip: &str| {
        d.names
            .iter()
            .find(|(i, _)| i == ip)
            .map(|(_, n)| n.as_str())
    };
    h.push_str("<section><h2>Sending sources, failing first</h2><table id=\"sources\"><tr><th>source</th><th>name</th><th>messages</th><th>DMARC pass</th><th>SPF aligned</th><th>DKIM aligned</th><th>ours?</th></tr>");
    let signed_any = d.selectors.iter().any(|s| s.signed > 0);
    for s in &d.sources {
        // Ours: one of our hosts, or a sender of mail that carried our passing signature
        // and passed SPF too (a forwarder passes our signature on with SPF failing).
        let ours =
            s.ip.parse::<IpAddr>()
                .is_ok_and(|ip| ctx.config.signing.is_internal(ip))
                || (signed_any && s.dkim_pass > s.forwarded);
        let _ = write!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            if s.dmarc_pass < s.messages { "failing" } else { "ok" },
            esc(&s.ip),
            esc(name_of(&s.ip).unwrap_or("")),
            s.messages,
            pct(s.dmarc_pass, s.messages),
            pct(s.spf_pass, s.messages),
            pct(s.dkim_pass, s.messages),
            if ours { "yes" } else { "" }
        );
    }
    h.push_str("</table></section>");

    // Forwarding.
    let forwarded: Vec<&SourceRow> = d.sources.iter().filter(|s| s.forwarded > 0).collect();
    h.push_str("<section><h2>Forwarding: DKIM passed, SPF failed</h2>");
    if forwarded.is_empty() {
        h.push_str("<p>None in this range.</p>");
    } else {
        h.push_str("<table id=\"forwarding\"><tr><th>source</th><th>name</th><th>messages</th><th>known forwarder</th></tr>");
        for s in forwarded {
            let name = name_of(&s.ip).unwrap_or("");
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(&s.ip),
                esc(name),
                s.forwarded,
                if !name.is_empty() && forwarder(name) {
                    "yes"
                } else {
                    ""
                }
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");

    // TLS.
    h.push_str("<section><h2>TLS-RPT</h2>");
    if d.tls.is_empty() {
        h.push_str("<p>No TLS reports in this range.</p>");
    } else {
        let sum = |k: &str| -> i64 {
            d.tls
                .iter()
                .filter(|t| t.result_type == k)
                .map(|t| t.sessions)
                .sum()
        };
        let _ = write!(
            h,
            "<p><span id=\"tls-ok\">{}</span> successful, <span id=\"tls-failed\">{}</span> failed sessions</p>",
            sum("total-success"),
            sum("total-failure")
        );
        // Per MX: successful sessions under the MX their policy names (receivers count them
        // per policy), failed ones under the receiving MX each failure names.
        let mut per_mx: std::collections::BTreeMap<&str, (i64, i64)> = Default::default();
        for t in &d.tls {
            let e = per_mx.entry(t.mx.as_str()).or_default();
            match t.result_type.as_str() {
                "total-success" => e.0 += t.sessions,
                "total-failure" => {}
                _ => e.1 += t.sessions,
            }
        }
        h.push_str("<table id=\"tls-mx\"><tr><th>MX</th><th>successful</th><th>failed</th></tr>");
        for (mx, (ok, failed)) in per_mx.iter().filter(|(_, v)| **v != (0, 0)) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{ok}</td><td class=\"n\">{failed}</td></tr>",
                if mx.is_empty() {
                    "(not named)".to_string()
                } else {
                    esc(mx)
                },
            );
        }
        h.push_str("</table><p class=\"note\">Receivers count successful sessions per policy: they are shown under the MX the policy names (a list or pattern when it covers several).</p>");
        h.push_str(
            "<table id=\"tls\"><tr><th>receiving MX</th><th>failure</th><th>sessions</th></tr>",
        );
        for t in d
            .tls
            .iter()
            .filter(|t| !t.result_type.starts_with("total-"))
        {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                esc(&t.mx),
                esc(&t.result_type),
                t.sessions
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</section></main></body></html>\n");
    h
}

/// The page's only style sheet.
pub const STYLE: &str =
    "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{display:flex;gap:2em;align-items:center;padding:.5em 1.5em;background:#234;color:#fff}
header h1{font-size:1.2em;margin:0}main{padding:0 1.5em 2em;max-width:960px}
section{background:#fff;border:1px solid #ddd;border-radius:4px;margin:1em 0;padding:.5em 1em}
h2{font-size:1.05em}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #eee;padding:.2em .5em;text-align:left}td.n{text-align:right}
tr.failing td:first-child{color:#b22}.figures span{font-weight:bold}
.guidance{background:#eef6ee;border-left:4px solid #3a3;padding:.3em .6em}
svg.chart,svg.bar{width:100%;height:auto}rect.pass{fill:#3a3}rect.fail{fill:#c33}
rect.d-none{fill:#8ab}rect.d-pass{fill:#3a3}rect.d-quarantine{fill:#e93}rect.d-reject{fill:#c33}
text{font-size:10px;fill:#666}.note{color:#666;font-size:.9em}
";
