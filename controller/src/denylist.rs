//! The identities whose certificates are refused (`ebbctl cert revoke`),
//! kept in memory for the checks every Connect and admin call makes; the
//! store holds the same list across restarts.

use std::collections::HashSet;
use std::sync::{PoisonError, RwLock};

/// A set of SPIFFE URIs, read on every Connect and admin call, written on
/// each revocation.
#[derive(Debug, Default)]
pub struct DenyList(RwLock<HashSet<String>>);

impl DenyList {
    /// The list as the store had it at start-up.
    pub fn new(identities: impl IntoIterator<Item = String>) -> Self {
        Self(RwLock::new(identities.into_iter().collect()))
    }

    pub fn contains(&self, identity: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(identity)
    }

    /// Adds `identity`; false if it was there already.
    pub fn insert(&self, identity: String) -> bool {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(identity)
    }
}
