//! ebb's controller.
//!
//! - `config`: `controller.toml`, its defaults and validation.
//! - `store`: the `Store` trait and its SQLite backend.
//! - `rules`: pure scaling-rule, alarm and cooldown arithmetic.
//! - `provider`: the `Provider` trait and the process provider.
//! - `pki`: the CA, server and admin certs in the data dir; the mTLS server config.
//! - `tls`: the accept loop that authenticates connections and logs refusals.
//! - `model`: scaling groups, configurations, instances, activities; validation; scale-in choice.
//! - `engine`: capacity changes as activities, and the reconcile loop.
//! - `clock`: wall-clock time behind one type.
//! - `lifecycle`: lifecycle hooks' admin operations and the outbox to agents.
//! - `notify`: webhook notifications of activities, retried, never blocking.
//! - `fleet`: the live registry of agents, their counters and sample rings.
//! - `admin`: `AdminService`, the ESS-named admin API (admin certs only).
//! - `automation`: scaling rules, alarms, scheduled tasks, suspended processes.
//! - `agent_service`: `AgentService.Connect`, identity checks and the pull loop.
//! - `http`: `/healthz` and `/metrics`.
//! - `server`: start-up order and serving until shutdown.
//! - `demo`: the quickstart: a controller, a local agent and a live view.
#![forbid(unsafe_code)]

/// A string-valued enum with its names on the wire (serde, `Display`,
/// `FromStr` whose error lists the valid names) and `ALL`. Defined before
/// the modules so each of them can use it; paths are absolute so callers
/// need no imports.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize,
        )]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown value `{s}`; expected one of {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

pub mod admin;
pub mod agent_service;
pub mod automation;
pub mod clock;
pub mod config;
pub mod demo;
pub mod engine;
pub mod fleet;
pub mod http;
pub mod lifecycle;
pub mod model;
pub mod notify;
pub mod pki;
pub mod provider;
pub mod rules;
pub mod schedule;
pub mod server;
pub mod store;
pub mod tls;
