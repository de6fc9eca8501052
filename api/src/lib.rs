//! The gRPC API of loms (`loms.Loms`), generated from `proto/loms/v1/loms.proto`.

pub mod loms {
    tonic::include_proto!("loms");
    include!(concat!(env!("OUT_DIR"), "/loms.serde.rs"));
}

/// Encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/loms_descriptor.bin"));

pub use loms::loms_client::LomsClient;
pub use loms::loms_server::{Loms, LomsServer};

#[cfg(test)]
mod tests {
    use super::loms::*;

    #[test]
    fn json_follows_the_protobuf_mapping() {
        let req: OrderCreateRequest = serde_json::from_str(
            r#"{"userId": "42", "items": [{"sku": 1076963, "count": 3}], "extra": 1}"#,
        )
        .unwrap();
        assert_eq!(req.user_id, 42);
        assert_eq!(
            req.items,
            vec![Item {
                sku: 1076963,
                count: 3
            }]
        );

        let out = serde_json::to_string(&OrderCreateResponse { order_id: 7 }).unwrap();
        assert_eq!(out, r#"{"orderId":"7"}"#);
    }
}
