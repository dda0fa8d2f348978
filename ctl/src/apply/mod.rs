//! `apply -f FILE.toml`: one group and its configuration, declared, with
//! optional `[[rule]]`, `[[alarm]]` and `[[task]]` sections. The file is
//! parsed and validated with the domain's own rules, then compared with
//! what the controller has; `plan` (pure) lists the calls that close the
//! gap, and `run` makes them, one printed line per change. Nothing the file
//! does not mention is ever deleted.
//!
//! - `file`: the file's sections, parsing and validation.
//! - `step`: the calls `apply` makes and the lines they print.
//! - `plan`: the diff for the group and its configuration.
//! - `plan_automation`: the diff for rules, alarms and tasks.
//! - `execute`: reading the current state and making the calls.

mod execute;
mod file;
mod plan;
mod plan_automation;
mod step;
#[cfg(test)]
mod tests;

pub use execute::run;
pub use file::load;
