//! ebb's controller: the service that turns agents' samples into scaling
//! decisions and carries them out.
//!
//! Layers point one way, and no two modules import each other:
//!
//! ```text
//! server, http, tls          wiring: start-up order, listeners, /metrics
//!   └─ api                   the admin gRPC API: parse, call the engine, render
//!        └─ engine           reconcile, alarms, schedules, health, hooks, activities
//!             ├─ store       the Store trait and its SQLite backend
//!             ├─ provider    the Provider trait and the process provider
//!             └─ fleet       agents' streams, sessions, sample rings, the hook outbox
//!                  └─ ebb_core   the pure model and decisions (its own crate)
//! ```
//!
//! Beside them, used from any layer: `config` (`controller.toml`), `clock`
//! (all time), `id` (new ids), `pki` (the certs in the data dir),
//! `denylist` (revoked identities), `webhook` (the HTTP(S) client that
//! sends notifications).
#![forbid(unsafe_code)]

pub mod api;
pub mod clock;
pub mod config;
pub mod denylist;
pub mod engine;
pub mod etcd;
pub mod fleet;
pub mod ha;
pub mod http;
pub mod id;
pub mod pki;
pub mod provider;
pub mod server;
pub mod store;
pub mod tls;
pub mod webhook;
