//! What the relay does about a batch that failed: the verdict, decided on the error and on
//! what was sent.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::outbox::store::Row;

/// Errors no retry can cure: the broker (or the producer, before sending) refuses the record
/// itself. Anything else, a broker away or too few replicas included, is retried.
pub fn permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// Why a batch stopped, at which row.
pub struct Failure {
    pub row: Row,
    pub error: String,
    pub permanent: bool,
    /// The error concerns this row alone (refused before sending, or sent alone).
    pub alone: bool,
}

/// What follows a failed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The broker refuses this row for good: it is parked with every later row of its order.
    Park,
    /// The broker refused a batch for good: its rows are sent one at a time to find the one.
    Isolate,
    /// Anything else: everything from the failed row on is resent after a back-off.
    Retry,
}

impl Failure {
    /// The verdict; `isolating` when the relay already sends one row at a time.
    pub fn verdict(&self, isolating: bool) -> Verdict {
        match (self.permanent, self.alone || isolating) {
            (true, true) => Verdict::Park,
            (true, false) => Verdict::Isolate,
            (false, _) => Verdict::Retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_record_is_permanent() {
        let produce = |code| KafkaError::MessageProduction(code);
        assert!(permanent(&produce(RDKafkaErrorCode::MessageSizeTooLarge)));
        assert!(permanent(&produce(RDKafkaErrorCode::InvalidRecord)));
        for retried in [
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(!permanent(&produce(retried)), "{retried:?}");
        }
    }

    #[test]
    fn a_verdict_for_each_failure() {
        let failure = |permanent, alone| Failure {
            row: Row {
                id: 1,
                topic: "t".into(),
                key: "1".into(),
                payload: Vec::new(),
                headers: serde_json::Value::Null,
                waited: 0.0,
                blocked: false,
            },
            error: String::new(),
            permanent,
            alone,
        };
        // (permanent, the row alone, isolating) -> verdict
        let table = [
            ((true, true, false), Verdict::Park),
            ((true, false, true), Verdict::Park),
            ((true, true, true), Verdict::Park),
            ((true, false, false), Verdict::Isolate),
            ((false, false, false), Verdict::Retry),
            ((false, true, false), Verdict::Retry),
            ((false, false, true), Verdict::Retry),
            ((false, true, true), Verdict::Retry),
        ];
        for ((permanent, alone, isolating), verdict) in table {
            assert_eq!(
                failure(permanent, alone).verdict(isolating),
                verdict,
                "permanent {permanent}, alone {alone}, isolating {isolating}"
            );
        }
    }
}
