//! Where a local controller keeps what `ebbctl`, the demo and tests read:
//! its data dir, the endpoints file it writes after binding, and its
//! certificates. Shared so the CLI needs no part of the server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The data dir a bare `ebb-controller serve` uses, relative to where it runs.
pub const DEFAULT_DATA_DIR: &str = "./ebb-data";
/// Loopback only by default: exposing the controller is the operator's choice.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:7440";
/// The name agents use to reach the controller unless the operator adds more.
pub const DEFAULT_SERVER_NAME: &str = "localhost";
/// Written after binding so `ebbctl`, the demo and tests find the ports.
pub const ENDPOINTS_FILE: &str = "endpoints.toml";

/// Where a running controller can be reached, as written to the data dir.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Endpoints {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// The DNS name to verify the server certificate against.
    pub server_name: String,
}

/// Paths of everything in `<data_dir>/pki`.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub dir: PathBuf,
}

impl PkiPaths {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("pki"),
        }
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn ca(&self) -> (PathBuf, PathBuf) {
        (self.file("ca.crt"), self.file("ca.key"))
    }
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (self.file("server.crt"), self.file("server.key"))
    }
    pub fn admin(&self) -> (PathBuf, PathBuf) {
        (self.file("admin.crt"), self.file("admin.key"))
    }
}
