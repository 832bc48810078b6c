//! The StartSession rate of each principal: one token bucket per name, so a burst from one
//! principal is refused without slowing the others.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;

pub(super) struct StartRate {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl StartRate {
    /// Buckets of `burst` starts refilled at `per_minute`.
    pub(super) fn new(burst: u32, per_minute: u32) -> StartRate {
        StartRate {
            burst: f64::from(burst),
            per_second: f64::from(per_minute) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one start for `name` at `now`; when its bucket is empty, how long until the next.
    pub(super) fn take(&self, name: &str, now: Instant) -> Result<(), Duration> {
        let (burst, rate) = (self.burst, self.per_second);
        let refill = |bucket: &mut Bucket| {
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
            bucket.at = now;
        };
        let mut buckets = lock(&self.buckets);
        // Full buckets say nothing: forgetting them keeps the map to the principals now busy.
        buckets.retain(|_, bucket| {
            refill(bucket);
            bucket.tokens < burst
        });
        let bucket = buckets.entry(name.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        match rate > 0.0 {
            true => Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate)),
            false => Err(Duration::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_refused_past_its_size_and_refills_per_principal() {
        let rate = StartRate::new(3, 60);
        let now = Instant::now();
        for _ in 0..3 {
            rate.take("a", now).unwrap();
        }
        let wait = rate.take("a", now).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        rate.take("b", now).unwrap();
        rate.take("a", now + Duration::from_secs(1)).unwrap();
        assert!(rate.take("a", now + Duration::from_secs(1)).is_err());
    }
}
