//! The gRPC API of loms (`loms.Loms`), generated from `proto/loms/v1/loms.proto`.

#[allow(clippy::too_many_lines)] // generated
pub mod loms {
    tonic::include_proto!("loms");
    include!(concat!(env!("OUT_DIR"), "/loms.serde.rs"));
}

/// Encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/loms_descriptor.bin"));

/// One HTTP route of the gateway, from an RPC's `google.api.http` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRoute {
    /// The method of `loms.Loms` it calls.
    pub rpc: &'static str,
    /// The HTTP method.
    pub method: &'static str,
    pub path: &'static str,
    /// Whether the request message is the JSON body (else the query string).
    pub body: bool,
}

// `HTTP_ROUTES`: every rule of `loms.Loms`, in declaration order.
include!(concat!(env!("OUT_DIR"), "/http_routes.rs"));

/// The OpenAPI 3 document of the HTTP routes, generated from the proto and its rules.
pub const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

pub use loms::loms_client::LomsClient;
pub use loms::loms_server::{Loms, LomsServer};

#[cfg(test)]
mod tests {
    use super::loms::*;
    use super::{FILE_DESCRIPTOR_SET, HTTP_ROUTES, OPENAPI_JSON};
    use prost::Message;

    fn rpcs() -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let file = set.file.iter().find(|f| f.package() == "loms").unwrap();
        file.service[0]
            .method
            .iter()
            .map(|m| m.name().to_string())
            .collect()
    }

    #[test]
    fn every_rpc_has_one_http_rule() {
        let routed: Vec<String> = HTTP_ROUTES.iter().map(|r| r.rpc.to_string()).collect();
        assert_eq!(
            routed,
            rpcs(),
            "an RPC without its google.api.http rule has no route"
        );
    }

    #[test]
    fn openapi_describes_every_route_in_the_json_mapping() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for route in HTTP_ROUTES {
            let op = &doc["paths"][route.path][route.method.to_lowercase()];
            assert_eq!(
                op["operationId"],
                format!("Loms_{}", route.rpc),
                "{route:?}"
            );
            assert!(!op["description"].as_str().unwrap().is_empty(), "{route:?}");
        }
        let schemas = &doc["components"]["schemas"];
        let sku = &schemas["loms.Item"]["properties"]["sku"];
        assert_eq!(
            (&sku["type"], &sku["format"]),
            (&"string".into(), &"int64".into())
        );
        let create = &doc["paths"]["/order/create"]["post"];
        assert!(create["requestBody"].is_object());
        let info = &doc["paths"]["/order/info"]["get"]["parameters"][0];
        assert_eq!(
            (&info["name"], &info["in"]),
            (&"orderId".into(), &"query".into())
        );
    }

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
