//! Order statuses and the validation every request passes, gRPC and HTTP alike, before any
//! storage is touched.

use std::collections::BTreeMap;

use events_proto::status as names;

use crate::error::ServiceError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    New,
    AwaitingPayment,
    Failed,
    Payed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => names::NEW,
            Self::AwaitingPayment => names::AWAITING_PAYMENT,
            Self::Failed => names::FAILED,
            Self::Payed => names::PAYED,
            Self::Cancelled => names::CANCELLED,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::New,
            Self::AwaitingPayment,
            Self::Failed,
            Self::Payed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }
}

/// One sku of an order, counts of duplicate skus summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub sku: i64,
    pub count: i64,
}

/// A validated OrderCreate: lines sorted by sku, one per sku.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: i64,
    pub lines: Vec<Line>,
}

pub fn positive_id(field: &str, value: i64) -> Result<i64, ServiceError> {
    if value > 0 {
        Ok(value)
    } else {
        Err(ServiceError::invalid(format!(
            "{field} must be greater than 0, got {value}"
        )))
    }
}

pub fn new_order(request: &api::loms::OrderCreateRequest) -> Result<NewOrder, ServiceError> {
    let user_id = positive_id("user_id", request.user_id)?;
    if request.items.is_empty() {
        return Err(ServiceError::invalid("items must not be empty"));
    }
    let mut by_sku: BTreeMap<i64, i64> = BTreeMap::new();
    for (i, item) in request.items.iter().enumerate() {
        positive_id(&format!("items[{i}].sku"), item.sku)?;
        if item.count == 0 {
            return Err(ServiceError::invalid(format!(
                "items[{i}].count must be greater than 0, got 0"
            )));
        }
        *by_sku.entry(item.sku).or_default() += i64::from(item.count);
    }
    // The summed count of a sku must still fit the API's uint32 count.
    if let Some((sku, count)) = by_sku.iter().find(|(_, c)| **c > i64::from(u32::MAX)) {
        return Err(ServiceError::invalid(format!(
            "items: total count {count} of sku {sku} exceeds {}",
            u32::MAX
        )));
    }
    Ok(NewOrder {
        user_id,
        lines: by_sku
            .into_iter()
            .map(|(sku, count)| Line { sku, count })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::loms::{Item, OrderCreateRequest};

    fn request(user_id: i64, items: &[(i64, u32)]) -> OrderCreateRequest {
        OrderCreateRequest {
            user_id,
            items: items
                .iter()
                .map(|&(sku, count)| Item { sku, count })
                .collect(),
        }
    }

    fn message(r: Result<NewOrder, ServiceError>) -> String {
        match r {
            Err(ServiceError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn duplicates_are_summed_and_sorted() {
        let order = new_order(&request(1, &[(5, 1), (2, 2), (5, 3)])).unwrap();
        assert_eq!(
            order.lines,
            vec![Line { sku: 2, count: 2 }, Line { sku: 5, count: 4 }]
        );
    }

    #[test]
    fn messages_name_the_field() {
        assert!(message(new_order(&request(0, &[(1, 1)]))).contains("user_id"));
        assert!(message(new_order(&request(1, &[]))).contains("items"));
        assert!(message(new_order(&request(1, &[(1, 1), (-3, 1)]))).contains("items[1].sku"));
        assert!(message(new_order(&request(1, &[(1, 0)]))).contains("items[0].count"));
        assert!(message(new_order(&request(1, &[(1, u32::MAX), (1, 1)]))).contains("sku 1"));
    }

    #[test]
    fn statuses_round_trip() {
        for s in ["new", "awaiting payment", "failed", "payed", "cancelled"] {
            assert_eq!(Status::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(Status::parse("paid"), None);
    }
}
