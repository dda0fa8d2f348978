//! A controller that is not the leader refuses an agent's stream, a
//! mutating admin call and a join with `UNAVAILABLE`, and names the leader's
//! gRPC address (`host:port`) in the [`LEADER_METADATA`] entry when it
//! knows one. The agent and `ebbctl` go there; the refused call did nothing.

use tonic::{Code, Status};

/// The ASCII metadata entry carrying the leader's gRPC address.
pub const LEADER_METADATA: &str = "ebb-leader";

/// The leader's address a refusal names: `Some` only for `UNAVAILABLE`
/// carrying a non-empty, printable [`LEADER_METADATA`] entry.
pub fn leader_of(status: &Status) -> Option<String> {
    if status.code() != Code::Unavailable {
        return None;
    }
    let value = status
        .metadata()
        .get(LEADER_METADATA)?
        .to_str()
        .ok()?
        .trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// The refusal of a controller that is not the leader: the leader's address
/// when one is known, else that none is elected yet.
pub fn not_leader(leader: Option<&str>) -> Status {
    let Some(addr) = leader else {
        return Status::unavailable("not the leader; no leader elected yet");
    };
    let mut status = Status::unavailable(format!("not the leader; the leader is at {addr}"));
    match addr.parse() {
        Ok(value) => {
            status.metadata_mut().insert(LEADER_METADATA, value);
        }
        // An address that is not ASCII cannot be followed: say it, name none.
        Err(_) => {
            status = Status::unavailable(format!(
                "not the leader; the leader's address {addr:?} is not ASCII"
            ));
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_leader_and_leader_of_reads_it() {
        let s = not_leader(Some("10.0.0.2:7440"));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.message(),
            "not the leader; the leader is at 10.0.0.2:7440"
        );
        assert_eq!(leader_of(&s).as_deref(), Some("10.0.0.2:7440"));
        let none = not_leader(None);
        assert_eq!(none.message(), "not the leader; no leader elected yet");
        assert_eq!(leader_of(&none), None);
    }

    #[test]
    fn only_an_unavailable_status_with_the_entry_redirects() {
        let mut other = Status::permission_denied("no");
        other
            .metadata_mut()
            .insert(LEADER_METADATA, "10.0.0.2:7440".parse().unwrap());
        assert_eq!(leader_of(&other), None);
        let mut blank = Status::unavailable("not the leader");
        blank
            .metadata_mut()
            .insert(LEADER_METADATA, " ".parse().unwrap());
        assert_eq!(leader_of(&blank), None);
        assert_eq!(leader_of(&Status::unavailable("transport")), None);
    }

    /// The entry survives the trip over the wire as a header.
    #[test]
    fn the_entry_round_trips_through_http_headers() {
        let response = not_leader(Some("127.0.0.1:7441")).into_http::<tonic::body::Body>();
        let back = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(leader_of(&back).as_deref(), Some("127.0.0.1:7441"));
    }
}
