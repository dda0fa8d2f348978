//! Unix-millisecond timestamps as users read them.

use jiff::Timestamp;

/// A Unix-ms time as RFC 3339 (UTC); the number itself if out of range.
pub fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}
