//! The fuzz targets' bodies (`fuzz/`, cargo-fuzz with libFuzzer), here so that the regression
//! test replays the kept corpus and crashes through the very same code. Each takes any bytes and
//! must neither panic nor break the property it checks.

use prost::Message;

/// Bytes as the HTTP gateway's JSON bodies, on to the domain's validation, as the gateway does
/// it: the Protobuf JSON mapping (pbjson), then one validation for both transports.
pub fn gateway(data: &[u8]) {
    use api::loms::{OrderCreateRequest, OrderPayRequest};
    use loms::domain::{NewOrder, OrderId};
    if let Ok(request) = serde_json::from_slice::<OrderCreateRequest>(data) {
        let order = NewOrder::parse(&loms::service::order_request(&request), 1_000);
        if let Ok(order) = order {
            // Valid: a positive user, sorted, one line per sku, positive counts that fit the
            // API's uint32.
            assert!(order.user_id().get() > 0);
            assert!(order.lines().windows(2).all(|w| w[0].sku < w[1].sku));
            assert!(order
                .lines()
                .iter()
                .all(|l| l.sku > 0 && l.count > 0 && l.count <= i64::from(u32::MAX)));
        }
    }
    if let Ok(request) = serde_json::from_slice::<OrderPayRequest>(data) {
        let parsed = OrderId::parse("order_id", request.order_id);
        assert_eq!(parsed.is_ok(), request.order_id > 0);
    }
}

/// Bytes as the notifier decodes a message: an event that decodes encodes to bytes that decode
/// to the same event.
pub fn event(data: &[u8]) {
    if let Ok(event) = events_proto::OrderEvent::decode_from(data) {
        let again = events_proto::OrderEvent::decode(event.encode_to_vec().as_slice())
            .expect("a re-encoded event decodes");
        assert_eq!(again, event);
    }
}

/// Bytes as loms's TOML configuration file: loaded and validated, or refused with a reason,
/// never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = std::env::temp_dir().join(format!("loms-fuzz-{}.toml", std::process::id()));
    std::fs::write(&file, text).expect("write the configuration");
    let overrides = loms::config::Overrides {
        config: Some(file),
        ..Default::default()
    };
    let _ = loms::config::Settings::load(&overrides, Some(Default::default()));
}

/// The kept inputs of `target`: its corpus and the crashes found (`fuzz/corpus/<target>`,
/// `fuzz/regressions/<target>`).
pub fn kept_inputs(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let root = crate::stack::root().join("fuzz");
    let mut inputs = Vec::new();
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("read a kept input");
                inputs.push((path, bytes));
            }
        }
    }
    inputs.sort();
    inputs
}
