//! The only code that edits a message. Deletes first, inserts last: Postfix counts headers
//! inserted earlier in the same end-of-message stage when it resolves a delete's index, so the
//! other order can delete our own new header and keep a forged one.

use indymilter::{ActionError, ContextActions};

/// Header edits and the SMTP answer for one message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Edits {
    /// (name, 1-based index among fields of that name as the milter saw them)
    pub deletes: Vec<(String, i32)>,
    /// (index, name, value). Values already carry their leading space and LF folding.
    /// Applied in order, each at its index; index 0 is the top of the message.
    pub inserts: Vec<(i32, String, String)>,
    /// Ask the MTA to hold the message, with this reason.
    pub quarantine: Option<String>,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.inserts.is_empty() && self.quarantine.is_none()
    }
}

/// Apply edits through the milter action channel.
pub async fn apply(
    actions: &(impl ContextActions + Sync),
    edits: &Edits,
) -> Result<(), ActionError> {
    // Delete from the highest index down, so earlier indexes stay valid in any MTA.
    let mut deletes = edits.deletes.clone();
    deletes.sort_by_key(|d| std::cmp::Reverse(d.1));
    for (name, index) in &deletes {
        actions
            .change_header(name.as_str(), *index, None::<&str>)
            .await?;
    }
    for (index, name, value) in &edits.inserts {
        actions
            .insert_header(*index, name.as_str(), value.as_str())
            .await?;
    }
    if let Some(reason) = &edits.quarantine {
        actions.quarantine(reason.as_str()).await?;
    }
    Ok(())
}
