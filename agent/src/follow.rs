//! Which controller to dial next. The agent walks `controller`'s list in
//! order, moving on after a failed dial or a lost stream; once every
//! address has failed in a row, that round is over and the agent backs
//! off. A controller that is not the leader names the leader, and the next
//! dial goes there, listed or not: a side trip that does not move the walk.
//! Side trips per round are bounded, so two controllers that each name the
//! other (during an election) cannot make the agent spin without backing off.

/// At most this many redirects are followed in one round; more are
/// failures, so a loop of stale redirects still ends in a back-off.
const MAX_REDIRECTS_PER_ROUND: usize = 3;

/// What to do before the next dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Dial the next address at once: the round goes on.
    Dial,
    /// Dial the leader named, after a short jitter so a fleet told at once
    /// does not arrive at once.
    Leader,
    /// Every listed address failed: back off, then start a new round.
    BackOff,
}

/// The walk through the list and the side trip in progress, if any.
#[derive(Debug, Clone)]
pub struct Rotation {
    list: Vec<String>,
    /// The listed address the walk is at.
    pos: usize,
    /// The leader being dialled instead of `list[pos]`.
    side_trip: Option<String>,
    /// Listed addresses that failed (or redirected) in this round.
    failed: usize,
    redirects: usize,
}

impl Rotation {
    /// Starts at the first address; `list` is not empty (config validation).
    pub fn new(list: Vec<String>) -> Self {
        assert!(!list.is_empty(), "a validated config names a controller");
        Self {
            list,
            pos: 0,
            side_trip: None,
            failed: 0,
            redirects: 0,
        }
    }

    /// The address to dial now.
    pub fn current(&self) -> &str {
        self.side_trip.as_deref().unwrap_or(&self.list[self.pos])
    }

    /// Whether the list names more than one controller.
    pub fn several(&self) -> bool {
        self.list.len() > 1
    }

    /// The current controller welcomed the agent: a new round starts, from
    /// wherever the agent is now.
    pub fn connected(&mut self) {
        self.failed = 0;
        self.redirects = 0;
    }

    /// The dial failed, or the stream was lost, or the controller refused
    /// without naming a leader: move to the next listed address.
    pub fn failed(&mut self) -> Next {
        let left = self.side_trip.take();
        // A side trip's failure does not count: its listed address already did.
        if left.is_none() {
            self.failed += 1;
        }
        self.pos = (self.pos + 1) % self.list.len();
        // The leader just lost is not dialled again at once for being
        // listed next: it counts as failed, and the walk moves past it.
        if self.list.len() > 1 && left.as_deref() == Some(self.list[self.pos].as_str()) {
            self.failed += 1;
            self.pos = (self.pos + 1) % self.list.len();
        }
        if self.failed >= self.list.len() {
            self.failed = 0;
            self.redirects = 0;
            Next::BackOff
        } else {
            Next::Dial
        }
    }

    /// The current controller is not the leader and names `leader`: go
    /// there next, unless this round has followed enough redirects or the
    /// controller names itself (then it is a failure).
    pub fn redirected(&mut self, leader: &str) -> Next {
        if self.redirects >= MAX_REDIRECTS_PER_ROUND || leader == self.current() {
            return self.failed();
        }
        if self.side_trip.is_none() {
            self.failed += 1;
        }
        self.redirects += 1;
        self.side_trip = Some(leader.to_owned());
        Next::Leader
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Rotation {
        Rotation::new(vec!["a:1".into(), "b:1".into(), "c:1".into()])
    }

    #[test]
    fn failures_walk_the_list_and_a_full_round_backs_off() {
        let mut r = three();
        assert_eq!(r.current(), "a:1");
        assert_eq!((r.failed(), r.current()), (Next::Dial, "b:1"));
        assert_eq!((r.failed(), r.current()), (Next::Dial, "c:1"));
        assert_eq!((r.failed(), r.current()), (Next::BackOff, "a:1"));
        // The next round is a full one again.
        assert_eq!((r.failed(), r.current()), (Next::Dial, "b:1"));
    }

    #[test]
    fn a_lost_stream_moves_on_and_a_welcome_starts_a_new_round() {
        let mut r = three();
        assert_eq!(r.failed(), Next::Dial);
        assert_eq!(r.current(), "b:1");
        r.connected();
        // b was the leader and died: c next, then a, then back-off after b.
        assert_eq!((r.failed(), r.current()), (Next::Dial, "c:1"));
        assert_eq!((r.failed(), r.current()), (Next::Dial, "a:1"));
        assert_eq!((r.failed(), r.current()), (Next::BackOff, "b:1"));
    }

    #[test]
    fn a_redirect_is_followed_even_off_the_list_and_keeps_the_walk() {
        let mut r = three();
        assert_eq!(r.redirected("z:9"), Next::Leader);
        assert_eq!(r.current(), "z:9");
        // The named leader is gone too: the walk resumes after a.
        assert_eq!((r.failed(), r.current()), (Next::Dial, "b:1"));
        assert_eq!((r.failed(), r.current()), (Next::Dial, "c:1"));
        assert_eq!((r.failed(), r.current()), (Next::BackOff, "a:1"));
    }

    #[test]
    fn the_leader_reached_by_redirect_is_left_for_the_next_listed_address() {
        let mut r = three();
        assert_eq!(r.redirected("c:1"), Next::Leader);
        r.connected();
        assert_eq!(r.current(), "c:1");
        // c is lost: b is the next listed address after a, where the walk was.
        assert_eq!((r.failed(), r.current()), (Next::Dial, "b:1"));
        // A new leader is named after a failover.
        assert_eq!(r.redirected("a:1"), Next::Leader);
        assert_eq!(r.current(), "a:1");
    }

    #[test]
    fn the_leader_just_lost_is_not_dialled_again_for_being_next_in_the_list() {
        let mut r = three();
        // a names b, the next listed address, as the leader.
        assert_eq!(r.redirected("b:1"), Next::Leader);
        r.connected();
        // b is lost: c next, not b again.
        assert_eq!((r.failed(), r.current()), (Next::Dial, "c:1"));
        assert_eq!((r.failed(), r.current()), (Next::Dial, "a:1"));
        assert_eq!((r.failed(), r.current()), (Next::BackOff, "b:1"));
        // Before any welcome: a redirected, b failed, so c is the last try.
        let mut r = three();
        assert_eq!(r.redirected("b:1"), Next::Leader);
        assert_eq!((r.failed(), r.current()), (Next::Dial, "c:1"));
        assert_eq!((r.failed(), r.current()), (Next::BackOff, "a:1"));
    }

    #[test]
    fn redirects_in_a_loop_end_in_a_back_off() {
        let mut r = Rotation::new(vec!["a:1".into(), "b:1".into()]);
        // a names b, b names a, ... as two stale followers might.
        assert_eq!(r.redirected("b:1"), Next::Leader);
        assert_eq!(r.redirected("a:1"), Next::Leader);
        assert_eq!(r.redirected("b:1"), Next::Leader);
        assert_eq!(r.current(), "b:1");
        // The fourth is a failure of b; a failed (redirected) before it:
        // the round is over.
        assert_eq!((r.redirected("a:1"), r.current()), (Next::BackOff, "a:1"));
        // A fresh round follows redirects again.
        assert_eq!(r.redirected("b:1"), Next::Leader);

        // Past the cap, a redirect is a failure and the walk goes on.
        let mut r = three();
        for leader in ["z:1", "y:1", "x:1"] {
            assert_eq!(r.redirected(leader), Next::Leader);
        }
        assert_eq!((r.redirected("w:1"), r.current()), (Next::Dial, "b:1"));
        assert_eq!((r.redirected("v:1"), r.current()), (Next::Dial, "c:1"));
        assert_eq!((r.failed(), r.current()), (Next::BackOff, "a:1"));
    }

    #[test]
    fn a_controller_naming_itself_is_a_failure() {
        let mut r = three();
        assert_eq!((r.redirected("a:1"), r.current()), (Next::Dial, "b:1"));
    }

    #[test]
    fn one_address_backs_off_after_each_failure() {
        let mut r = Rotation::new(vec!["a:1".into()]);
        assert_eq!((r.failed(), r.current()), (Next::BackOff, "a:1"));
        assert_eq!(r.redirected("b:1"), Next::Leader);
        assert_eq!((r.failed(), r.current()), (Next::BackOff, "a:1"));
    }
}
