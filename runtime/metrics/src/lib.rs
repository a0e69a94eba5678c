//! Counters, gauges and histograms, and their exposition in the Prometheus text format
//! (version 0.0.4, what `promtool check metrics` reads).
//!
//! The master and the agent each keep one process-wide set of metrics, fed with one line
//! where a thing happens, and write them out on every scrape of `/metrics`:
//!
//! ```
//! use corral_metrics::{Counter, Histogram, Text};
//!
//! let launches = Counter::default();
//! let latency = Histogram::new(&[0.1, 1.0, 10.0]);
//! launches.inc();
//! latency.observe(0.25);
//!
//! let mut text = Text::default();
//! text.counter("corral_task_launches_total", "Tasks launched.", launches.get());
//! text.histogram("corral_launch_seconds", "Launch latency.", &latency);
//! let body = text.finish();
//! assert!(body.contains("corral_task_launches_total 1\n"));
//! assert!(body.contains("corral_launch_seconds_bucket{le=\"1\"} 1\n"));
//! ```
//!
//! Metric values change from many threads; every type here is `Sync`. Values that are
//! cheaper to count when asked (agents by state, tasks by state) are not kept here at all:
//! the scrape asks their owner and writes them with [`Text::gauge_vec`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The content type of [`Text::finish`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds in seconds for things that take milliseconds to seconds (launches, calls).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves numbers, never a broken invariant.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A number that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A number that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away, stopping at zero.
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters told apart by the value of one label (for example `state`).
#[derive(Debug)]
pub struct CounterVec {
    label: &'static str,
    values: Mutex<BTreeMap<String, u64>>,
}

impl CounterVec {
    /// Counters labelled `label`, each starting at zero when first counted.
    pub fn new(label: &'static str) -> Self {
        Self {
            label,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one to the counter labelled `value`.
    pub fn inc(&self, value: &str) {
        *lock(&self.values).entry(value.to_owned()).or_default() += 1;
    }

    /// The counter labelled `value`.
    pub fn get(&self, value: &str) -> u64 {
        lock(&self.values).get(value).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
struct HistogramData {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

/// Observations counted into buckets by upper bound, with their count and sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    data: Mutex<HistogramData>,
}

impl Histogram {
    /// A histogram with these upper bounds (sorted, `+Inf` implied).
    pub fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        Self {
            data: Mutex::new(HistogramData {
                buckets: vec![0; bounds.len()],
                count: 0,
                sum: 0.0,
            }),
            bounds,
        }
    }

    /// Counts one observation.
    pub fn observe(&self, value: f64) {
        let mut d = lock(&self.data);
        for (bound, n) in self.bounds.iter().zip(d.buckets.iter_mut()) {
            if value <= *bound {
                *n += 1;
            }
        }
        d.count += 1;
        d.sum += value;
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        lock(&self.data).count
    }
}

/// Histograms told apart by the value of one label (for example `slot`).
#[derive(Debug)]
pub struct HistogramVec {
    label: &'static str,
    bounds: Vec<f64>,
    values: Mutex<BTreeMap<String, Histogram>>,
}

impl HistogramVec {
    /// Histograms labelled `label`, all with these bounds.
    pub fn new(label: &'static str, bounds: &[f64]) -> Self {
        Self {
            label,
            bounds: bounds.to_vec(),
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts one observation in the histogram labelled `value`.
    pub fn observe(&self, value: &str, v: f64) {
        lock(&self.values)
            .entry(value.to_owned())
            .or_insert_with(|| Histogram::new(&self.bounds))
            .observe(v);
    }
}

/// A scrape being written: one family after another, each with `# HELP` and `# TYPE`.
#[derive(Debug, Default)]
pub struct Text(String);

impl Text {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    /// A counter; `name` should end in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        self.sample(name, &[], value as f64);
    }

    /// A family of counters by one label.
    pub fn counter_vec(&mut self, name: &str, help: &str, vec: &CounterVec) {
        self.header(name, help, "counter");
        for (value, n) in lock(&vec.values).iter() {
            self.sample(name, &[(vec.label, value)], *n as f64);
        }
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help, "gauge");
        self.sample(name, &[], value);
    }

    /// A family of gauges by one label, from values computed for this scrape.
    pub fn gauge_vec(&mut self, name: &str, help: &str, label: &str, values: &[(&str, f64)]) {
        self.header(name, help, "gauge");
        for (value, v) in values {
            self.sample(name, &[(label, value)], *v);
        }
    }

    fn histogram_samples(&mut self, name: &str, label: Option<(&str, &str)>, h: &Histogram) {
        let d = lock(&h.data).clone();
        let bucket = format!("{name}_bucket");
        for (bound, n) in h.bounds.iter().zip(&d.buckets) {
            let le = number(*bound);
            let labels: Vec<(&str, &str)> =
                label.into_iter().chain([("le", le.as_str())]).collect();
            self.sample(&bucket, &labels, *n as f64);
        }
        let labels: Vec<(&str, &str)> = label.into_iter().chain([("le", "+Inf")]).collect();
        self.sample(&bucket, &labels, d.count as f64);
        let labels: Vec<(&str, &str)> = label.into_iter().collect();
        self.sample(&format!("{name}_sum"), &labels, d.sum);
        self.sample(&format!("{name}_count"), &labels, d.count as f64);
    }

    /// A histogram; `name` should end in its unit (`_seconds`).
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, help, "histogram");
        self.histogram_samples(name, None, h);
    }

    /// A family of histograms by one label.
    pub fn histogram_vec(&mut self, name: &str, help: &str, vec: &HistogramVec) {
        self.header(name, help, "histogram");
        for (value, h) in lock(&vec.values).iter() {
            self.histogram_samples(name, Some((vec.label, value)), h);
        }
    }

    /// The text of the scrape.
    pub fn finish(self) -> String {
        self.0
    }
}

/// A sample value as Prometheus writes it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 0.1, 10.0]);
        for v in [0.05, 0.5, 5.0, 50.0] {
            h.observe(v);
        }
        let mut t = Text::default();
        t.histogram("x_seconds", "X.", &h);
        let body = t.finish();
        for line in [
            "x_seconds_bucket{le=\"0.1\"} 1",
            "x_seconds_bucket{le=\"1\"} 2",
            "x_seconds_bucket{le=\"10\"} 3",
            "x_seconds_bucket{le=\"+Inf\"} 4",
            "x_seconds_sum 55.55",
            "x_seconds_count 4",
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "{line:?} missing in\n{body}"
            );
        }
    }

    #[test]
    fn labels_and_help_are_escaped() {
        let c = CounterVec::new("slot");
        c.inc("a\"b\\c\nd");
        let mut t = Text::default();
        t.counter_vec("y_total", "line one\nline \\ two", &c);
        let body = t.finish();
        assert!(
            body.contains("# HELP y_total line one\\nline \\\\ two\n"),
            "{body}"
        );
        assert!(
            body.contains("y_total{slot=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{body}"
        );
    }

    #[test]
    fn gauge_stops_at_zero() {
        let g = Gauge::default();
        g.inc();
        g.dec();
        g.dec();
        assert_eq!(g.get(), 0);
    }
}
