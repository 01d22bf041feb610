//! The circuit breaker of one peer (pure: the clock is passed in).
//!
//! Closed, it lets every request through and counts outcomes over a sliding
//! window; when at least `min_requests` in the window ended and the share of
//! failures reaches `failure_percent`, it opens. Open, it refuses at once
//! until `cooldown` has passed; then it is half-open and lets `probes`
//! requests through: one success closes it (with a fresh window), one
//! failure opens it again. Neutral outcomes (a 429, a refusal: the peer is
//! up) move nothing but free a probe's slot.

use std::time::{Duration, Instant};

/// How many slices the window is counted in.
const SLICES: u32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    pub window: Duration,
    pub min_requests: u32,
    pub failure_percent: u32,
    pub cooldown: Duration,
    pub probes: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The value of the `mosaic_federation_breaker_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// Whether a request may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Allowed as one of the half-open breaker's probes: its outcome decides.
    Probe,
    /// Refused; the breaker may let a probe through after `retry_in`.
    Refused {
        retry_in: Duration,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// The peer answered, but the answer says nothing of its health (429).
    Neutral,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slice {
    /// Which slice of time (since the breaker's epoch) these counts are of.
    index: u64,
    successes: u32,
    failures: u32,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    epoch: Instant,
    slices: [Slice; SLICES as usize],
    state: State,
    /// When the open breaker may be probed.
    open_until: Instant,
    probes_out: u32,
}

impl Breaker {
    pub fn new(settings: BreakerSettings, now: Instant) -> Self {
        Self {
            settings,
            epoch: now,
            slices: Default::default(),
            state: State::Closed,
            open_until: now,
            probes_out: 0,
        }
    }

    /// The state at `now` (an open breaker whose cooldown passed is half-open).
    pub fn state(&self, now: Instant) -> State {
        match self.state {
            State::Open if now >= self.open_until => State::HalfOpen,
            s => s,
        }
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state(now) {
            State::Closed => Admission::Allowed,
            State::Open => Admission::Refused {
                retry_in: self.open_until - now,
            },
            State::HalfOpen => {
                if self.state == State::Open {
                    self.state = State::HalfOpen;
                    self.probes_out = 0;
                }
                if self.probes_out < self.settings.probes.max(1) {
                    self.probes_out += 1;
                    Admission::Probe
                } else {
                    Admission::Refused {
                        retry_in: Duration::ZERO,
                    }
                }
            }
        }
    }

    /// Counts the outcome of a request `admit` let through.
    pub fn record(&mut self, now: Instant, admitted: Admission, outcome: Outcome) {
        if admitted == Admission::Probe && self.state == State::HalfOpen {
            self.probes_out = self.probes_out.saturating_sub(1);
            match outcome {
                Outcome::Success => {
                    self.state = State::Closed;
                    self.slices = Default::default();
                }
                Outcome::Failure => self.open(now),
                Outcome::Neutral => {}
            }
            return;
        }
        if self.state != State::Closed {
            // Began before the breaker opened: the probes decide now.
            return;
        }
        let slice = self.slice(now);
        match outcome {
            Outcome::Success => slice.successes += 1,
            Outcome::Failure => slice.failures += 1,
            Outcome::Neutral => return,
        }
        let (ok, failed) = self.counts(now);
        let ended = ok + failed;
        if ended >= self.settings.min_requests.max(1)
            && u64::from(failed) * 100 >= u64::from(self.settings.failure_percent) * u64::from(ended)
        {
            self.open(now);
        }
    }

    /// How long it stays open (None unless open).
    pub fn open_for(&self, now: Instant) -> Option<Duration> {
        (self.state(now) == State::Open).then(|| self.open_until - now)
    }

    /// Opens a closed breaker for `remaining`: another replica opened its
    /// own. One already open or probing keeps its course.
    pub fn opened_elsewhere(&mut self, now: Instant, remaining: Duration) {
        if self.state(now) == State::Closed {
            self.open(now);
            self.open_until = now + remaining;
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open;
        self.open_until = now + self.settings.cooldown;
        self.probes_out = 0;
    }

    fn slice_len(&self) -> Duration {
        (self.settings.window / SLICES).max(Duration::from_millis(1))
    }

    fn index(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_nanos() / self.slice_len().as_nanos()) as u64
    }

    fn slice(&mut self, now: Instant) -> &mut Slice {
        let index = self.index(now);
        let slice = &mut self.slices[(index % u64::from(SLICES)) as usize];
        if slice.index != index {
            *slice = Slice {
                index,
                ..Slice::default()
            };
        }
        slice
    }

    /// Successes and failures within the window ending at `now`.
    fn counts(&self, now: Instant) -> (u32, u32) {
        let newest = self.index(now);
        self.slices
            .iter()
            .filter(|s| s.index + u64::from(SLICES) > newest && s.index <= newest)
            .fold((0, 0), |(ok, failed), s| (ok + s.successes, failed + s.failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: BreakerSettings = BreakerSettings {
        window: Duration::from_secs(10),
        min_requests: 4,
        failure_percent: 50,
        cooldown: Duration::from_secs(5),
        probes: 1,
    };

    fn run(b: &mut Breaker, now: Instant, outcome: Outcome) -> Admission {
        let admitted = b.admit(now);
        if !matches!(admitted, Admission::Refused { .. }) {
            b.record(now, admitted, outcome);
        }
        admitted
    }

    #[test]
    fn a_breaker_opened_elsewhere_opens_a_closed_one_for_what_remains() {
        let t0 = Instant::now();
        let mut b = Breaker::new(SETTINGS, t0);
        assert_eq!(b.open_for(t0), None);
        b.opened_elsewhere(t0, Duration::from_secs(2));
        assert_eq!(b.open_for(t0), Some(Duration::from_secs(2)));
        assert!(matches!(
            b.admit(t0 + Duration::from_secs(1)),
            Admission::Refused { .. }
        ));
        // Then it probes as if it had opened itself.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(b.admit(later), Admission::Probe);
        // While probing, another replica's report changes nothing.
        b.opened_elsewhere(later, Duration::from_secs(60));
        assert_eq!(b.state(later), State::HalfOpen);
        b.record(later, Admission::Probe, Outcome::Success);
        assert_eq!(b.state(later), State::Closed);
    }

    #[test]
    fn opens_at_the_failure_share_once_enough_requests_ended() {
        let t0 = Instant::now();
        let mut b = Breaker::new(SETTINGS, t0);
        for _ in 0..3 {
            run(&mut b, t0, Outcome::Failure);
        }
        assert_eq!(b.state(t0), State::Closed, "3 requests are fewer than min_requests");
        run(&mut b, t0, Outcome::Success);
        assert_eq!(b.state(t0), State::Open, "3 of 4 failed");
        assert_eq!(
            b.admit(t0 + Duration::from_secs(2)),
            Admission::Refused {
                retry_in: Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let t0 = Instant::now();
        let mut b = Breaker::new(SETTINGS, t0);
        for _ in 0..3 {
            run(&mut b, t0, Outcome::Failure);
        }
        let later = t0 + Duration::from_secs(11);
        run(&mut b, later, Outcome::Failure);
        assert_eq!(b.state(later), State::Closed, "only one failure within the window");
        for _ in 0..2 {
            run(&mut b, later, Outcome::Success);
        }
        run(&mut b, later, Outcome::Failure);
        assert_eq!(b.state(later), State::Open, "2 of 4 within the window failed: 50%");
    }

    #[test]
    fn neutral_outcomes_never_open_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(SETTINGS, t0);
        for _ in 0..100 {
            run(&mut b, t0, Outcome::Neutral);
        }
        assert_eq!(b.state(t0), State::Closed);
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_decides() {
        let t0 = Instant::now();
        let mut b = Breaker::new(SETTINGS, t0);
        for _ in 0..4 {
            run(&mut b, t0, Outcome::Failure);
        }
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.state(t1), State::HalfOpen);
        let probe = b.admit(t1);
        assert_eq!(probe, Admission::Probe);
        assert!(matches!(b.admit(t1), Admission::Refused { .. }), "one probe at a time");
        b.record(t1, probe, Outcome::Failure);
        assert_eq!(b.state(t1), State::Open, "a failed probe opens it again");
        let t2 = t1 + Duration::from_secs(5);
        let probe = b.admit(t2);
        b.record(t2, probe, Outcome::Neutral);
        assert_eq!(b.state(t2), State::HalfOpen, "a neutral probe decides nothing");
        let probe = b.admit(t2);
        assert_eq!(probe, Admission::Probe, "and frees its slot");
        b.record(t2, probe, Outcome::Success);
        assert_eq!(b.state(t2), State::Closed);
        run(&mut b, t2, Outcome::Failure);
        assert_eq!(b.state(t2), State::Closed, "closing starts a fresh window");
    }

    #[test]
    fn outcomes_of_requests_begun_before_it_opened_are_ignored() {
        let t0 = Instant::now();
        let mut b = Breaker::new(SETTINGS, t0);
        let late = b.admit(t0);
        for _ in 0..4 {
            run(&mut b, t0, Outcome::Failure);
        }
        b.record(t0, late, Outcome::Success);
        assert_eq!(b.state(t0), State::Open);
    }
}
