//! The broker stopped under a consuming notifier, then started again: the notifier goes on from
//! where it was. Alone in its test binary, since it stops the stack's broker.

use std::time::Duration;

use testkit::eventually;
use testkit::kafka;
use testkit::process::NotifierOptions;
use testkit::stack::stack;

/// How long the notifier may take to log what a test waits for.
const PATIENCE: Duration = Duration::from_secs(120);
/// Consume errors the notifier must have seen during the outage: librdkafka queues one per
/// failed reconnect, and all of them must be behind the consumer once the broker is back.
const ERRORS_DURING_OUTAGE: usize = 5;

#[tokio::test]
async fn the_notifier_resumes_after_a_broker_outage() {
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let group = format!("notifier-test-{}", testkit::unique());
    let notifier = NotifierOptions::new(&topic, &group).start();
    notifier.joined().await;
    let logged = |ids: &[String]| {
        let seen: std::collections::HashSet<String> =
            notifier.events().into_iter().map(|(id, _, _)| id).collect();
        ids.iter().all(|id| seen.contains(id))
    };
    let before = kafka::produce_events(&topic, 1..51).await;
    eventually("the first events are logged", PATIENCE, || {
        std::future::ready(logged(&before))
    })
    .await;

    stack("kafka-stop");
    eventually("the notifier sees the outage", PATIENCE, || {
        let errors = notifier
            .process
            .json_lines()
            .iter()
            .filter(|l| l["message"] == "consume error")
            .count();
        std::future::ready(errors >= ERRORS_DURING_OUTAGE)
    })
    .await;
    stack("kafka-start");

    let after = kafka::produce_events(&topic, 51..101).await;
    eventually("the later events are logged", PATIENCE, || {
        std::future::ready(logged(&after))
    })
    .await;
}
