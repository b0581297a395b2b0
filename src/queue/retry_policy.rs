//! Exponential backoff with full jitter, as a value.

use std::time::Duration;

use rand::Rng;

/// When to try again after a failed attempt.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1 = after the first failure): a random duration
    /// between half and all of `base * 2^(attempt-1)`, capped at `max`. Half-jitter keeps workers
    /// that failed together from retrying together while still backing off.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        let half = full / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_with_jitter_and_a_cap() {
        let policy = RetryPolicy {
            base: Duration::from_secs(30),
            max: Duration::from_secs(900),
        };
        for _ in 0..100 {
            let first = policy.delay(1);
            assert!(first >= Duration::from_secs(15) && first <= Duration::from_secs(30));
            let third = policy.delay(3);
            assert!(third >= Duration::from_secs(60) && third <= Duration::from_secs(120));
            let late = policy.delay(20);
            assert!(late >= Duration::from_secs(450) && late <= Duration::from_secs(900));
        }
    }
}
