//! Host metric collectors.
