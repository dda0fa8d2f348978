//! The `rule`, `scale`, `alarm` and `task` families: one module each, and
//! `definition`, a rule's definition built from flags (shared with `apply`).

mod alarm;
mod definition;
mod rule;
mod task;

pub use alarm::{alarm, check_alarm};
pub use definition::definition_json;
pub use rule::{check_rule, rule, scale};
pub use task::{check_task, task};
