//! What loms tells its admin listener (`service_runtime::admin`): its metrics, and `/readyz`.

use service_runtime::admin::{Readiness, Status};

use crate::health;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct LomsStatus {
    pub metrics: Metrics,
    pub readiness: health::Readiness,
}

impl Status for LomsStatus {
    fn metrics(&self) -> String {
        self.metrics.render()
    }

    /// Ready while this replica can serve (PostgreSQL answers, no shutdown begun). The body also
    /// tells what the relay does: a relay that cannot publish (the broker is away) does not make
    /// the replica unready, as requests still succeed and their events wait in the outbox, but
    /// it says so here, in `loms_relay_consecutive_failures`, and in the alerts.
    fn readiness(&self) -> Readiness {
        let relay = serde_json::to_value(self.metrics.relay_status())
            .expect("the relay's status is plain data");
        Readiness {
            ready: self.readiness.ready(),
            parts: [("relay".to_string(), relay)].into_iter().collect(),
        }
    }
}
