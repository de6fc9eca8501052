//! Latency histograms as the services expose them (OpenMetrics text), read back: quantiles and
//! distributions per stage, at the resolution of their buckets (doubling from 0.25 ms).

/// Cumulative buckets of one histogram: (upper bound in seconds, observations at or below it).
#[derive(Debug, Clone, Default)]
pub struct Buckets(pub Vec<(f64, u64)>);

/// The histogram `name` (without suffix) from an exposition.
pub fn parse(text: &str, name: &str) -> Buckets {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.split_whitespace().next()?.parse().ok()?))
        })
        .collect();
    Buckets(buckets)
}

/// Scrapes `/metrics` on `address`.
pub async fn scrape(address: &str) -> String {
    let reply = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("scrape metrics");
    reply.text().await.expect("metrics text")
}

impl Buckets {
    pub fn count(&self) -> u64 {
        self.0.last().map_or(0, |b| b.1)
    }

    /// What was observed since `earlier`, a scrape of the same histogram.
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|&(le, count)| {
                    let before = earlier.0.iter().find(|(l, _)| *l == le).map_or(0, |b| b.1);
                    (le, count.saturating_sub(before))
                })
                .collect(),
        )
    }

    /// The `q` quantile in milliseconds, interpolated linearly within its bucket.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.quantile(q) * 1e3
    }

    /// The upper bound of the highest bucket that holds an observation: the largest one is at
    /// most this.
    pub fn max_at_most(&self) -> f64 {
        let mut below = 0;
        for &(le, cumulative) in &self.0 {
            if cumulative == self.count() && cumulative > below {
                return le;
            }
            below = cumulative;
        }
        0.0
    }

    /// The `q` quantile in the histogram's unit, interpolated linearly within its bucket.
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for &(le, cumulative) in &self.0 {
            if cumulative as f64 >= rank {
                if le.is_infinite() {
                    return lower.0;
                }
                let within = (cumulative - lower.1).max(1) as f64;
                let share = (rank - lower.1 as f64) / within;
                return lower.0 + (le - lower.0) * share;
            }
            lower = (le, cumulative);
        }
        lower.0
    }

    /// Points of the distribution: (upper bound in ms, share of observations at or below).
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let total = self.count().max(1) as f64;
        self.0
            .iter()
            .filter(|(le, _)| le.is_finite())
            .map(|&(le, c)| (le * 1e3, c as f64 / total))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE x histogram\nx_sum 1.0\nx_count 4\nx_bucket{le=\"0.001\"} 1\nx_bucket{le=\"0.002\"} 3\nx_bucket{le=\"+Inf\"} 4\n";

    #[test]
    fn since_subtracts_an_earlier_scrape() {
        let earlier = Buckets(vec![(0.001, 1), (0.002, 1), (f64::INFINITY, 2)]);
        let later = parse(TEXT, "x").since(&earlier);
        assert_eq!(later.0, vec![(0.001, 0), (0.002, 2), (f64::INFINITY, 2)]);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = parse(TEXT, "x");
        assert_eq!(b.count(), 4);
        assert!((b.quantile_ms(0.25) - 1.0).abs() < 1e-9);
        assert!((b.quantile_ms(0.5) - 1.5).abs() < 1e-9);
        assert!((b.quantile_ms(0.75) - 2.0).abs() < 1e-9);
        // Beyond the last finite bound: that bound, the most the buckets can tell.
        assert!((b.quantile_ms(1.0) - 2.0).abs() < 1e-9);
        assert_eq!(b.cdf(), vec![(1.0, 0.25), (2.0, 0.75)]);
    }
}
