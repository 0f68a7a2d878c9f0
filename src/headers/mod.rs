//! Header fields we write: Authentication-Results, and the edit list applied at end of message.

pub mod actions;
pub mod auth_results;
