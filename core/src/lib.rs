//! ebb's decision core: the domain model and every decision that is a plain
//! function of its inputs and a `now`. No async, no network, no storage, no
//! clock: Cargo enforces it (serde, jiff, and toml and serde_json for the
//! apply file, are the only dependencies).
//!
//! - `apply_file`: the TOML file `ebbctl apply` and `ebb-sim` read, parsed and validated.
//! - `guard`: the mass-failure guard: which unhealthy instances to replace now.
//! - `local`: a local controller's data dir, endpoints file and certificate paths.
//! - `model`: scaling groups, configurations, instances, activities, hooks,
//!   tasks; their validation; the choice of instances to remove.
//! - `plan`: the reconcile loop's decisions: each instance's next step, how
//!   capacity must move, when the converging activity is done.
//! - `rules`: capacity, step, target-tracking, alarm and cooldown arithmetic.
//! - `schedule`: scheduled tasks' recurrences (Daily, Weekly, Monthly, Cron) in a time zone.
//! - `decide`: whether and how far a rule run moves capacity, and why not.
//! - `time`: Unix-ms timestamps as users read them.
//! - `url`: the webhook URLs ebb accepts.
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

pub mod apply_file;
pub mod decide;
pub mod guard;
pub mod local;
pub mod model;
pub mod plan;
pub mod rules;
pub mod schedule;
pub mod time;
pub mod url;
