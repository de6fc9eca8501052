//! Kafka for tests: topics of their own, a producer, and a reader that returns what a topic
//! holds with partition, offset, key and headers.

use std::collections::HashMap;
use std::time::Duration;

use events_proto::OrderEvent;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;

use crate::stack::kafka_client;

/// How long a metadata or watermark request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading a whole topic may take.
const READ_PATIENCE: Duration = Duration::from_secs(120);

fn admin() -> AdminClient<DefaultClientContext> {
    kafka_client().create().expect("admin client")
}

/// The replication factor of the stack's topics (`KAFKA_REPLICATION`, which `stack.sh env`
/// prints): 3 on a three-node cluster, where a write also needs two in-sync replicas.
pub fn replication() -> i32 {
    std::env::var("KAFKA_REPLICATION")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
}

async fn create(name: &str, partitions: i32, exists_ok: bool) {
    create_with(name, partitions, exists_ok, &[]).await;
}

async fn create_with(name: &str, partitions: i32, exists_ok: bool, config: &[(&str, &str)]) {
    let replication = replication();
    let min_isr = (replication - 1).max(1).to_string();
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication))
        .set("min.insync.replicas", &min_isr);
    for (key, value) in config {
        topic = topic.set(key, value);
    }
    let results = admin()
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .expect("create topic");
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if exists_ok => {}
            Err((topic, e)) => panic!("creating topic {topic}: {e}"),
        }
    }
}

/// A topic of its own, `<prefix>.<unique>`, so that runs never read each other's events.
pub async fn fresh_topic(prefix: &str, partitions: i32) -> String {
    let name = format!("{prefix}.{}", crate::unique());
    create(&name, partitions, false).await;
    name
}

/// A topic of its own with topic-level `config` (e.g. `max.message.bytes`).
pub async fn fresh_topic_with(prefix: &str, partitions: i32, config: &[(&str, &str)]) -> String {
    let name = format!("{prefix}.{}", crate::unique());
    create_with(&name, partitions, false, config).await;
    name
}

/// Sets topic-level `config` of `topic`.
pub async fn alter_topic(topic: &str, config: &[(&str, &str)]) {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (key, value) in config {
        alter = alter.set(key, value);
    }
    for result in admin()
        .alter_configs(&[alter], &AdminOptions::new())
        .await
        .expect("alter topic config")
    {
        result.unwrap_or_else(|(_, e)| panic!("altering {topic}: {e}"));
    }
}

/// Creates the topic `name`, which must not exist yet.
pub async fn create_topic(name: &str, partitions: i32) {
    create(name, partitions, false).await;
}

/// Creates the topic `name` unless it exists, as kafka-init does.
pub async fn ensure_topic(name: &str, partitions: i32) {
    create(name, partitions, true).await;
}

/// One message as read from a topic.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Consumed {
    /// The message as an order event, if it is one.
    pub fn event(&self) -> Option<OrderEvent> {
        OrderEvent::decode_from(&self.payload).ok()
    }
}

/// Reads `topic` from the beginning until `done` holds for what was read; panics after
/// `within`.
pub async fn consume_until(
    topic: &str,
    within: Duration,
    done: impl Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    let consumer: StreamConsumer = kafka_client()
        .set("group.id", format!("test-reader-{}", crate::unique()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while !done(&seen) {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => m,
            // A node of the cluster down: librdkafka says so and goes on with the others.
            Ok(Err(e)) => {
                eprintln!("reading {topic}: {e}");
                continue;
            }
            Err(_) => panic!("timed out reading {topic}: {} messages read", seen.len()),
        };
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        seen.push(Consumed {
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    seen
}

/// How many messages `topic` holds, over all its partitions.
pub fn message_count(topic: &str) -> i64 {
    let consumer = metadata_consumer();
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .expect("metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), METADATA_TIMEOUT)
                .expect("watermarks");
            high - low
        })
        .sum()
}

/// Every message of `topic` up to its current end.
pub async fn consume_all(topic: &str) -> Vec<Consumed> {
    let total = message_count(topic) as usize;
    consume_until(topic, READ_PATIENCE, |m| m.len() >= total).await
}

pub fn producer() -> FutureProducer {
    kafka_client()
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer")
}

pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

fn metadata_consumer() -> BaseConsumer {
    kafka_client().create().expect("consumer")
}

/// The node leading `partition` of `topic`.
pub fn partition_leader(topic: &str, partition: i32) -> i32 {
    let metadata = metadata_consumer()
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .expect("metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .find(|p| p.id() == partition)
        .expect("the partition")
        .leader()
}

/// Whether every partition of `topic` has all its replicas in sync (false while unknown).
pub fn fully_in_sync(topic: &str) -> bool {
    let Ok(metadata) = metadata_consumer().fetch_metadata(Some(topic), METADATA_TIMEOUT) else {
        return false;
    };
    metadata.topics().iter().all(|t| {
        !t.partitions().is_empty()
            && t.partitions()
                .iter()
                .all(|p| p.error().is_none() && p.isr().len() == p.replicas().len())
    })
}

/// A first event (`new`) of order `order_id`, as loms would write it.
pub fn new_order_event(order_id: i64) -> OrderEvent {
    OrderEvent {
        event_id: crate::unique(),
        order_id,
        status: crate::Status::New.as_str().into(),
        occurred_at: Some(std::time::SystemTime::now().into()),
        sequence: 1,
        user_id: 1,
        ..Default::default()
    }
}

/// Produces a first event for each order of `orders`, keyed by its id; returns their ids.
pub async fn produce_events(topic: &str, orders: std::ops::Range<i64>) -> Vec<String> {
    let producer = producer();
    let mut ids = Vec::new();
    for order_id in orders {
        let event = new_order_event(order_id);
        produce(
            &producer,
            topic,
            &order_id.to_string(),
            &event.encode_to_bytes(),
        )
        .await;
        ids.push(event.event_id);
    }
    ids
}

/// The offsets `group` committed on the partitions `0..partitions` of `topic`.
pub fn committed_offsets(
    topic: &str,
    group: &str,
    partitions: i32,
) -> std::collections::HashMap<i32, rdkafka::Offset> {
    let consumer: BaseConsumer = kafka_client()
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut query = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        query.add_partition(topic, p);
    }
    consumer
        .committed_offsets(query, METADATA_TIMEOUT)
        .expect("committed offsets")
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect()
}
