//! opendmarc.conf: enforcement, exemptions, trusted relays, reports.

use std::fmt::Write as _;

use toml::Value;

use super::{host_list, list, truthy, Plan, Setting};

/// opendmarc.conf.
pub(super) fn opendmarc(
    plan: &mut Plan,
    conf: &[Setting],
    socket: &mut Option<Setting>,
    umask: &mut Option<Setting>,
) -> Result<(), String> {
    let get = |name: &str| {
        conf.iter()
            .rev()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    };
    let our_id = get("AuthservID").map(|s| s.value.clone());
    let sent_by = get("FailureReportsSentBy").map(|s| s.value.clone());
    for s in conf {
        let v = s.value.as_str();
        match s.name.to_ascii_lowercase().as_str() {
            "authservid" => {
                if v.eq_ignore_ascii_case("hostname") {
                    plan.row(s, "authserv_id left unset: Postfix's $myhostname, as HOSTNAME meant");
                } else {
                    let shown = plan.set("authserv_id", v);
                    plan.row(s, shown);
                }
            }
            "trustedauthservids" => {
                let ids: Vec<String> = list(v)
                    .into_iter()
                    .filter(|id| {
                        our_id.as_deref().is_none_or(|ours| {
                            !crate::headers::auth_results::same_authserv_id(id, ours)
                        })
                    })
                    .collect();
                let dropped = list(v).len() - ids.len();
                let mut became = String::new();
                if dropped > 0 {
                    became.push_str(
                        "our own authserv-id dropped (fields claiming it are forged: mailseal \
                         deletes them on every path, never trusts them); ",
                    );
                }
                if ids.is_empty() {
                    became.push_str("nothing left to trust");
                } else {
                    let _ = write!(
                        became,
                        "verify.trusted_relays, written commented out: an id is trusted only \
                         from the relay's addresses, which opendmarc.conf does not name; fill \
                         in hosts and uncomment"
                    );
                    plan.comments.push(format!(
                        "\n# From {} TrustedAuthservIDs: trusted only from the relay's own addresses.\n# [[verify.trusted_relays]]\n# hosts = [\"192.0.2.25\"]   # the relay's addresses\n# authserv_ids = {}",
                        s.origin,
                        Value::from(ids.clone())
                    ));
                }
                plan.row(s, became);
            }
            "rejectfailures" => {
                let on = truthy(v).unwrap_or(false);
                let shown = plan.set("dmarc.enforce", on);
                plan.row(s, shown);
            }
            "holdquarantinedmessages" => {
                let hold = truthy(v).unwrap_or(false);
                let shown = plan.set("dmarc.quarantine_action", if hold { "hold" } else { "header" });
                plan.row(s, shown);
            }
            "ignorehosts" => host_list(plan, s, "dmarc.never_reject", "never-reject.hosts"),
            "ignoreauthenticatedclients" => {
                let on = truthy(v).unwrap_or(false);
                let shown = plan.set("dmarc.never_reject_authenticated", on);
                plan.row(
                    s,
                    format!("{shown} (authenticated mail is outbound, signed and not verified, anyway)"),
                );
            }
            "ignoremailfrom" => {
                let shown = plan.set("dmarc.never_reject_mail_from", list(v));
                plan.row(
                    s,
                    format!(
                        "{shown}: only when SPF passes for that envelope domain, since anyone \
                         can write it in MAIL FROM; the message is still checked and marked"
                    ),
                );
            }
            "spfselfvalidate" | "spfignoreresults" => {
                plan.row(s, "always: mailseal checks SPF itself and trusts no upstream result (see verify.trusted_relays)")
            }
            "failurereports" => {
                let on = truthy(v).unwrap_or(false);
                if on && sent_by.is_none() {
                    plan.row(s, "not migrated: failure reports need a sender address; set reports.failure_reports, reports.email, reports.org_name and reports.store");
                } else {
                    let shown = plan.set("reports.failure_reports", on);
                    plan.row(s, shown);
                }
            }
            "failurereportssentby" => {
                let shown = plan.set("reports.email", v);
                let org = v.rsplit_once('@').map_or(v, |(_, d)| d).to_string();
                let org_shown = plan.set("reports.org_name", org);
                if plan.settings.get("reports").and_then(|r| r.get("store")).is_none()
                {
                    plan.set("reports.store", "/var/lib/mailseal/reports.sqlite");
                }
                plan.row(s, format!("{shown}, {org_shown}"));
            }
            "historyfile" => {
                let shown = plan.set("reports.store", "/var/lib/mailseal/reports.sqlite");
                let sched = plan.set("reports.schedule", "daily");
                if sent_by.is_none() {
                    plan.row(s, format!("{shown}, {sched}: aggregate reports without opendmarc-import and opendmarc-reports; set reports.org_name and reports.email (required with a store)"));
                    plan.steps.push("set reports.org_name and reports.email in mailseal.toml (aggregate reports need them)".into());
                } else {
                    plan.row(s, format!("{shown}, {sched}: aggregate reports without opendmarc-import and opendmarc-reports"));
                }
            }
            "publicsuffixlist" => plan.row(
                s,
                "not needed: RFC 9989 finds the organizational domain by a DNS tree walk",
            ),
            "requiredheaders" => plan.row(
                s,
                "always strict in mailseal: no or several From addresses are dmarc=permerror (dmarc.multiple_from)",
            ),
            "socket" => *socket = Some(s.clone()),
            "umask" => {
                if umask.is_none() {
                    *umask = Some(s.clone());
                } else {
                    plan.row(s, "OpenDKIM's UMask is used for the one socket");
                }
            }
            "userid" => plan.row(s, "mailseal runs as its own user mailseal (the unit's User=)"),
            "syslog" | "syslogfacility" | "softwareheader" => plan.row(
                s,
                "mailseal logs one line per message to the journal",
            ),
            "pidfile" | "background" | "autorestart" | "autorestartrate" => {
                plan.row(s, "not needed: systemd runs and restarts mailseal")
            }
            _ => plan.row(s, "not recognised by migrate: check opendmarc.conf(5) and set its mailseal equivalent by hand, if any"),
        }
    }
    Ok(())
}
