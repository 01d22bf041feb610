//! What the latency benches share: repetition counts from the environment,
//! and one summary line per case.

use std::time::Duration;

/// `name` from the environment as a count, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Prints `label`'s runs, median, p90 and minimum; returns the median in ms.
pub fn summary(label: &str, mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(samples[samples.len() / 2]);
    let p90 = samples[(samples.len() * 9 / 10).min(samples.len() - 1)];
    println!(
        "{label:<16} runs={:<4} median={median:>8.3} ms  p90={:>8.3} ms  min={:>8.3} ms",
        samples.len(),
        ms(p90),
        ms(samples[0])
    );
    median
}
