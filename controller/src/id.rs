//! Ids the controller mints for what it creates.

/// A short random id with a prefix, e.g. `asg-3f9a0c1b2d4e`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff)
}
