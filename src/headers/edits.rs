//! The only code that edits a message, and the one place that knows how the MTA wants new
//! field values written.
//!
//! Values are kept as they will read in the stored message: CRLF folding, no space after the
//! colon. [`apply`] shapes them for the milter protocol: LF folding, and the leading space
//! written by us when SMFIP_HDR_LEADSPC was negotiated (the MTA then writes values verbatim)
//! or left to the MTA otherwise. Deletes go first, inserts last: Postfix counts fields inserted
//! earlier in the same end-of-message stage when it resolves a delete's index, so the other
//! order can delete our own new field and keep a forged one.

use indymilter::{ActionError, ContextActions};

/// The header edits for one message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Edits {
    /// (name, 1-based index among the fields of that name as the MTA sent them)
    deletes: Vec<(&'static str, i32)>,
    /// Fields inserted at the top, in order (the last one ends up topmost).
    inserts: Vec<(&'static str, String)>,
    /// Ask the MTA to hold the message, with this reason.
    quarantine: Option<String>,
}

impl Edits {
    /// Delete the `index`-th field (1-based) called `name`.
    pub fn delete(&mut self, name: &'static str, index: i32) {
        self.deletes.push((name, index));
    }

    /// Insert a field at the top of the message. `value` is the text after the colon, CRLF
    /// folded, without a leading space.
    pub fn insert_top(&mut self, name: &'static str, value: impl Into<String>) {
        self.inserts.push((name, value.into()));
    }

    /// Ask the MTA to put the message on hold.
    pub fn hold(&mut self, reason: impl Into<String>) {
        self.quarantine = Some(reason.into());
    }

    pub fn holds(&self) -> bool {
        self.quarantine.is_some()
    }

    /// Drop the hold (the MTA cannot apply it).
    pub fn unhold(&mut self) {
        self.quarantine = None;
    }

    /// Drop the inserts, keeping deletes and hold.
    pub fn clear_inserts(&mut self) {
        self.inserts.clear();
    }

    pub fn deletes(&self) -> &[(&'static str, i32)] {
        &self.deletes
    }

    /// The inserted fields, topmost first, as `Name: value` lines (CRLF) the way the stored
    /// message will read: what the command line tools print.
    pub fn inserted_lines(&self) -> String {
        self.inserts
            .iter()
            .rev()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect()
    }

    /// The value of the topmost inserted field called `name`.
    pub fn inserted(&self, name: &str) -> Option<&str> {
        self.inserts
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.inserts.is_empty() && self.quarantine.is_none()
    }
}

/// Apply edits through the milter action channel. `leading_space`: SMFIP_HDR_LEADSPC was
/// negotiated.
pub async fn apply(
    actions: &(impl ContextActions + Sync),
    edits: &Edits,
    leading_space: bool,
) -> Result<(), ActionError> {
    // Delete from the highest index down, so earlier indexes stay valid in any MTA.
    let mut deletes = edits.deletes.clone();
    deletes.sort_by_key(|d| std::cmp::Reverse(d.1));
    for (name, index) in &deletes {
        actions.change_header(*name, *index, None::<&str>).await?;
    }
    for (name, value) in &edits.inserts {
        let lf = value.replace("\r\n", "\n");
        let value = if leading_space { format!(" {lf}") } else { lf };
        actions.insert_header(0, *name, value).await?;
    }
    if let Some(reason) = &edits.quarantine {
        actions.quarantine(reason.as_str()).await?;
    }
    Ok(())
}
