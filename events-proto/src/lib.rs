//! Order events of loms: the `loms.events.v1.OrderEvent` message, the topic it travels on, and
//! the Kafka header values that name it.

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/loms.events.v1.rs"));
}

pub use v1::{Item, OrderEvent};

/// Topic the order events are published to.
pub const TOPIC: &str = "loms.order-events";
/// Fully qualified Protobuf name, sent in the `message-type` header.
pub const MESSAGE_TYPE: &str = "loms.events.v1.OrderEvent";
/// Sent in the `content-type` header.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// Header names of an event message.
pub mod headers {
    pub const EVENT_ID: &str = "event-id";
    pub const MESSAGE_TYPE: &str = "message-type";
    pub const CONTENT_TYPE: &str = "content-type";
}

/// Encoded `FileDescriptorSet` of the event protos.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/events_descriptor.bin"));

impl OrderEvent {
    pub fn encode_to_bytes(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }

    /// Decodes a message payload. Note that Protobuf accepts many byte strings (an empty one
    /// decodes to all defaults), so an event without id or order id is refused as well.
    pub fn decode_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let event: Self = prost::Message::decode(bytes).map_err(DecodeError::Protobuf)?;
        if event.event_id.is_empty() || event.order_id <= 0 || event.status.is_empty() {
            return Err(DecodeError::Incomplete);
        }
        Ok(event)
    }
}

#[derive(Debug)]
pub enum DecodeError {
    Protobuf(prost::DecodeError),
    /// Decoded, but lacks the event id, the order id or the status.
    Incomplete,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Protobuf(e) => write!(f, "not an OrderEvent: {e}"),
            Self::Incomplete => f.write_str("OrderEvent lacks event_id, order_id or status"),
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn sample() -> OrderEvent {
        OrderEvent {
            event_id: "0190c1c2-0000-7000-8000-000000000001".into(),
            order_id: 42,
            status: "second".into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            metadata: [("rpc".to_string(), "OrderCreate".to_string())].into(),
            user_id: 7,
            previous_status: "first".into(),
            sequence: 2,
            items: vec![Item { sku: 1, count: 3 }],
        }
    }

    #[test]
    fn round_trip() {
        let event = sample();
        assert_eq!(
            OrderEvent::decode_from(&event.encode_to_bytes()).unwrap(),
            event
        );
    }

    #[test]
    fn garbage_and_empty_are_refused() {
        assert!(matches!(
            OrderEvent::decode_from(&[0xff, 0xff, 0xff]),
            Err(DecodeError::Protobuf(_))
        ));
        assert!(matches!(
            OrderEvent::decode_from(&[]),
            Err(DecodeError::Incomplete)
        ));
        // Another message type: an Item parses as an OrderEvent without the required fields.
        let other = Item { sku: 5, count: 1 }.encode_to_vec();
        assert!(OrderEvent::decode_from(&other).is_err());
    }

    #[test]
    fn descriptor_set_names_the_message() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let file = fds
            .file
            .iter()
            .find(|f| f.package() == "loms.events.v1")
            .unwrap();
        assert!(file.message_type.iter().any(|m| m.name() == "OrderEvent"));
        assert_eq!(MESSAGE_TYPE, format!("{}.OrderEvent", file.package()));
    }
}
