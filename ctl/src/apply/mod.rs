//! `apply -f FILE.toml`: one group and its configuration, declared, with
//! optional `[[rule]]`, `[[alarm]]`, `[[task]]`, `[[load_balancer]]` and
//! `[[db_instance]]` sections. The file is
//! parsed and validated with the domain's own rules, then compared with
//! what the controller has; `plan` (pure) lists the calls that close the
//! gap, and `run` makes them, one printed line per change. Nothing the file
//! does not mention is deleted, unless `--prune` asks for the group's rules,
//! alarms and scheduled tasks it does not name to go.
//!
//! - `execute`: reading the current state and making the calls.
//! - `plan`: the plan, and the diff for the group and its configuration.
//! - `plan_automation`: the diff for rules, alarms and tasks.
//! - `plan_attachments`: the diff for load balancers and allow-lists.
//! - `diff`: one field compared, and how values are shown.
//! - `step`: the current state, the calls and their lines.
//! - `file`: the file's sections, parsing and validation.

mod diff;
mod execute;
mod file;
mod plan;
mod plan_attachments;
mod plan_automation;
mod step;
#[cfg(test)]
mod tests;

pub use execute::run;
pub use file::load;
