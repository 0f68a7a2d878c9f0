//! The example configuration file and the mailseal.toml(5) man page, generated from the key
//! declarations in [`super::raw`]. `config/mailseal.toml` is this output (a test checks it).

use super::raw::{KeyDoc, Settings, Shown, TableDoc};

const HEADER: &str = "\
# mailseal configuration. Every key is shown with its default value, or with an example value
# where it has none (commented out when optional).
# Durations: \"5s\", \"250ms\", \"2m\", \"14d\". Sizes: \"64M\", \"1M\", \"512K\" or plain bytes.
# This file is generated from the source (`mailseal manpage --page example-config`); man
# mailseal.toml(5) says the same.
";

fn tables() -> Vec<&'static TableDoc> {
    Settings::docs()
}

/// The example configuration file.
pub fn example_toml() -> String {
    let mut out = String::from(HEADER);
    for table in tables() {
        out.push('\n');
        if !table.name.is_empty() {
            out.push_str(&format!("[{}]\n", table.name));
            for line in table.doc {
                out.push_str(&format!("#{line}\n"));
            }
            if !table.doc.is_empty() {
                out.push('\n');
            }
        }
        for key in table.keys {
            for line in key.doc {
                out.push_str(&format!("#{line}\n"));
            }
            let comment = if key.shown == Shown::Example {
                "# "
            } else {
                ""
            };
            out.push_str(&format!("{comment}{} = {}\n", key.name, key.value));
        }
    }
    out
}

/// Roff-escape text.
/// A key's type in the words of the man page.
fn type_word(key: &KeyDoc) -> &'static str {
    let ty = key.ty.replace(' ', "");
    let inner = ty
        .strip_prefix("Option<")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(&ty);
    match inner {
        "bool" => "boolean",
        // Written as "1M", "0660": a size, or the octal socket mode.
        "usize" | "u32" if key.name == "socket_mode" => "octal string",
        "usize" | "u32" | "u16" | "u64" if key.value.starts_with('"') => "size",
        "usize" | "u32" | "u16" | "u64" => "integer",
        "Duration" => "duration",
        "HostList" => "list of hosts",
        "Vec<String>" => "list of strings",
        "Vec<SocketAddr>" => "list of addresses",
        "Vec<TrustedRelay>" => "list of tables",
        "SocketAddr" => "address",
        "PathBuf" => "path",
        _ => "string",
    }
}

fn roff(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// The mailseal.toml(5) man page.
pub fn man_page() -> String {
    let mut out = String::new();
    out.push_str(&format!(
        ".TH MAILSEAL.TOML 5 \"\" \"mailseal {}\" \"File formats\"\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(".SH NAME\nmailseal.toml \\- configuration of the mailseal milter\n");
    out.push_str(".SH SYNOPSIS\n/etc/mailseal/mailseal.toml\n");
    out.push_str(".SH DESCRIPTION\n");
    out.push_str(
        "A TOML file. Every key is optional: an empty file is a valid configuration that \
         signs nothing and verifies inbound mail. Unknown keys are errors. Durations are \
         written \"5s\", \"250ms\", \"2m\", \"14d\"; sizes \"64M\", \"1M\", \"512K\" or \
         plain bytes. \\fBmailseal check\\-config\\fR reports every problem with its file \
         and line. \\fBmailseal run\\fR rereads the file on SIGHUP.\n",
    );
    for table in tables() {
        let title = if table.name.is_empty() {
            "TOP LEVEL".to_string()
        } else {
            format!("[{}]", table.name)
        };
        out.push_str(&format!(".SH {}\n", roff(&title)));
        if !table.doc.is_empty() {
            let text: Vec<&str> = table.doc.iter().map(|l| l.trim()).collect();
            out.push_str(&format!("{}\n", roff(&text.join(" "))));
        }
        for key in table.keys {
            let shown = match key.shown {
                Shown::Default => format!("{}, default {}", type_word(key), key.value),
                Shown::Set | Shown::Example => {
                    format!("{}, no default; e.g. {}", type_word(key), key.value)
                }
            };
            out.push_str(&format!(
                ".TP\n\\fB{}\\fR ({})\n",
                roff(key.name),
                roff(&shown)
            ));
            let mut text: Vec<&str> = key.doc.iter().map(|l| l.trim()).collect();
            let full = if table.name.is_empty() {
                key.name.to_string()
            } else {
                format!("{}.{}", table.name, key.name)
            };
            if super::RESTART_ONLY.contains(&full.as_str()) {
                text.push("Read at start only: a reload logs the change, a restart applies it.");
            }
            out.push_str(&format!("{}\n", roff(&text.join(" "))));
        }
    }
    out.push_str(".SH SEE ALSO\n\\fBmailseal\\fR(8)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped example is exactly what the declarations generate, and it parses to the
    /// defaults (but for the values a site sets).
    #[test]
    fn example_file_is_generated_and_means_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mailseal.toml");
        let shipped = std::fs::read_to_string(&path).unwrap();
        assert!(
            shipped == example_toml(),
            "config/mailseal.toml is not what the key declarations generate; run\n  \
             cargo run --ignore-rust-version -- manpage --page example-config > config/mailseal.toml"
        );
        let parsed: Settings = toml::from_str(&shipped).unwrap();
        let mut expected = Settings {
            authserv_id: Some("mx.example.net".into()),
            ..Default::default()
        };
        expected.signing.key_table = Some("key.table".into());
        expected.signing.signing_table = Some("signing.table".into());
        assert_eq!(parsed, expected);
        // Every optional example value parses too.
        let mut uncommented = shipped.clone();
        for table in tables() {
            for key in table.keys.iter().filter(|k| k.shown == Shown::Example) {
                let line = format!("{} = {}", key.name, key.value);
                uncommented = uncommented.replace(&format!("# {line}"), &line);
            }
        }
        let all: Result<Settings, _> = toml::from_str(&uncommented);
        assert!(all.is_ok(), "{all:?}");
    }

    #[test]
    fn every_key_is_in_the_man_page() {
        let man = man_page();
        for table in tables() {
            for key in table.keys {
                assert!(
                    man.contains(&format!("\\fB{}\\fR", roff(key.name))),
                    "{}",
                    key.name
                );
            }
        }
    }
}
