//! Rate limits of the API's mutating endpoints: token buckets on the agent's monotonic
//! milliseconds (passed in; no clock read here).
//!
//! Two buckets per agent. Authorized mutating requests take from one
//! (`api.mutation_burst` at once, refilled at `api.mutations_per_minute`): a runaway script
//! cannot flap switchovers or fill the log. Failed authentications take from the other
//! (`api.auth_failure_burst` at once, one more every 10 s), which slows guessing a token; while it is empty every mutating
//! request answers 429, so a token guesser also delays the operator by at most its refill.
//! Reads and role checks are not limited.

/// A token bucket: `capacity` at once, refilled at `per_minute`.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    capacity: f64,
    per_ms: f64,
    tokens: f64,
    at_ms: Option<u64>,
}

impl Bucket {
    /// A full bucket; `per_minute == 0` refills nothing (only the burst, ever).
    pub fn new(capacity: u32, per_minute: u32) -> Bucket {
        Bucket {
            capacity: f64::from(capacity),
            per_ms: f64::from(per_minute) / 60_000.0,
            tokens: f64::from(capacity),
            at_ms: None,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        if let Some(at) = self.at_ms {
            let elapsed = now_ms.saturating_sub(at) as f64;
            self.tokens = (self.tokens + elapsed * self.per_ms).min(self.capacity);
        }
        self.at_ms = Some(now_ms);
    }

    /// How long until one token is there (`None`: one is there now). Takes nothing.
    pub fn wait_ms(&mut self, now_ms: u64) -> Option<u64> {
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            return None;
        }
        if self.per_ms <= 0.0 {
            return Some(u64::MAX);
        }
        Some(((1.0 - self.tokens) / self.per_ms).ceil() as u64)
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, now_ms: u64) -> Result<(), u64> {
        match self.wait_ms(now_ms) {
            None => {
                self.tokens -= 1.0;
                Ok(())
            }
            Some(ms) => Err(ms),
        }
    }
}

/// The API's two buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Authorized mutating requests.
    pub mutations: Bucket,
    /// Failed authentications.
    pub failures: Bucket,
}

/// Failed authentications refilled per minute.
pub const FAILURES_PER_MINUTE: u32 = 6;

impl Limits {
    /// The limits of `[api]`.
    pub fn of(api: &crate::config::ApiSection) -> Limits {
        Limits {
            mutations: Bucket::new(api.mutation_burst, api.mutations_per_minute),
            failures: Bucket::new(api.auth_failure_burst, FAILURES_PER_MINUTE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (time ms, take?) -> expected outcome, on a bucket of 3 refilled at 60 a minute (one a
    /// second).
    #[test]
    fn bucket_table() {
        let mut b = Bucket::new(3, 60);
        let steps: [(u64, Result<(), u64>); 8] = [
            (0, Ok(())),
            (0, Ok(())),
            (0, Ok(())),
            (0, Err(1000)),
            (400, Err(600)),
            (1000, Ok(())),
            (1000, Err(1000)),
            // A long pause refills to the burst, not beyond.
            (60_000, Ok(())),
        ];
        for (i, (t, want)) in steps.into_iter().enumerate() {
            assert_eq!(b.take(t), want, "step {i} at {t} ms");
        }
        assert_eq!(b.take(60_000), Ok(()));
        assert_eq!(b.take(60_000), Ok(()));
        assert_eq!(b.take(60_000), Err(1000));
        // No refill at all: the burst only.
        let mut once = Bucket::new(1, 0);
        assert_eq!(once.take(0), Ok(()));
        assert_eq!(once.take(1_000_000), Err(u64::MAX));
    }
}
