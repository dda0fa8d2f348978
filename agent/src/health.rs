//! Local health checks.
