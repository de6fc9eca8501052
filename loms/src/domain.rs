//! The rules of an order, in one place: its status (text form, parsing), the transitions
//! between statuses with what each does to the stock, and the values every request is parsed
//! into, gRPC and HTTP alike, before any storage is touched: ids that are positive and a new
//! order that is valid, by construction. The domain knows no database and no transport.

use std::collections::BTreeMap;

/// A value of a request that is not valid; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// Ids of the contract: positive 64-bit integers, parsed once at the edge.
macro_rules! positive_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(i64);

        impl $name {
            /// `value` if it is greater than 0; else why not, naming `field`.
            pub fn parse(field: &str, value: i64) -> Result<Self, Invalid> {
                if value > 0 {
                    Ok(Self(value))
                } else {
                    Err(Invalid(format!("{field} must be greater than 0, got {value}")))
                }
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_id!(
    /// An order's id.
    OrderId
);
positive_id!(
    /// A user's id.
    UserId
);
positive_id!(
    /// A stock keeping unit.
    Sku
);

/// The status of an order. Its text form is the contract's, in the API, the events and the
/// database (where the migration's CHECK lists the same five).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    New,
    AwaitingPayment,
    Failed,
    Payed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Self::New,
        Self::AwaitingPayment,
        Self::Failed,
        Self::Payed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::AwaitingPayment => "awaiting payment",
            Self::Failed => "failed",
            Self::Payed => "payed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// The status OrderCreate leaves an order in, after `new`.
    pub fn created(reserved: bool) -> Self {
        if reserved {
            Self::AwaitingPayment
        } else {
            Self::Failed
        }
    }

    /// The statuses an order passes through, in order, to reach `self` (its event history).
    pub fn history(self) -> &'static [Status] {
        use Status::*;
        match self {
            New => &[New],
            AwaitingPayment => &[New, AwaitingPayment],
            Failed => &[New, Failed],
            Payed => &[New, AwaitingPayment, Payed],
            Cancelled => &[New, AwaitingPayment, Cancelled],
        }
    }

    /// What `action` does to an order in this status.
    pub fn apply(self, action: Action) -> Result<Transition, Refused> {
        use Status::*;
        match (action, self) {
            (Action::Pay, AwaitingPayment) => Ok(Transition::To(Payed, StockEffect::WriteOff)),
            (Action::Pay, Payed) => Ok(Transition::Unchanged),
            (Action::Cancel, AwaitingPayment) => {
                Ok(Transition::To(Cancelled, StockEffect::Release))
            }
            // Nothing was reserved yet.
            (Action::Cancel, New) => Ok(Transition::To(Cancelled, StockEffect::Nothing)),
            (Action::Cancel, Cancelled) => Ok(Transition::Unchanged),
            _ => Err(Refused),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change a client asks of an existing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pay,
    Cancel,
}

impl Action {
    /// Why an order in the wrong status refuses this action.
    pub fn refusal(self) -> &'static str {
        match self {
            Self::Pay => "only an order awaiting payment can be paid",
            Self::Cancel => "only a new order or one awaiting payment can be cancelled",
        }
    }
}

/// The status does not allow the action.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

/// The outcome of an action allowed in the order's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Already done: nothing changes and no event is written.
    Unchanged,
    To(Status, StockEffect),
}

/// What a transition does to the stock of the order's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockEffect {
    Nothing,
    /// The reservation is given back.
    Release,
    /// The reserved units leave the stock.
    WriteOff,
}

/// One sku of an order, counts of duplicate skus summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub sku: i64,
    pub count: i64,
}

/// An OrderCreate as a client asked for it, in the domain's terms (converted at the edge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub user_id: i64,
    /// (sku, count) as given: duplicates not yet summed.
    pub items: Vec<(i64, u32)>,
}

/// A valid OrderCreate, built only by [`NewOrder::parse`]: a positive user id, and at least one
/// line, lines sorted by sku, one per sku, each count positive and within the API's uint32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    user_id: UserId,
    lines: Vec<Line>,
}

impl NewOrder {
    /// Parses `request`: ids and counts > 0, at least one line and at most `max_lines`.
    pub fn parse(request: &OrderRequest, max_lines: usize) -> Result<Self, Invalid> {
        let user_id = UserId::parse("user_id", request.user_id)?;
        if request.items.is_empty() {
            return Err(Invalid("items must not be empty".into()));
        }
        if request.items.len() > max_lines {
            return Err(Invalid(format!(
                "items: at most {max_lines} lines per order, got {}",
                request.items.len()
            )));
        }
        let mut by_sku: BTreeMap<i64, i64> = BTreeMap::new();
        for (i, &(sku, count)) in request.items.iter().enumerate() {
            let sku = Sku::parse(&format!("items[{i}].sku"), sku)?;
            if count == 0 {
                return Err(Invalid(format!(
                    "items[{i}].count must be greater than 0, got 0"
                )));
            }
            *by_sku.entry(sku.get()).or_default() += i64::from(count);
        }
        // The summed count of a sku must still fit the API's uint32 count.
        if let Some((sku, count)) = by_sku.iter().find(|(_, c)| **c > i64::from(u32::MAX)) {
            return Err(Invalid(format!(
                "items: total count {count} of sku {sku} exceeds {}",
                u32::MAX
            )));
        }
        Ok(Self {
            user_id,
            lines: by_sku
                .into_iter()
                .map(|(sku, count)| Line { sku, count })
                .collect(),
        })
    }

    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_LINES: usize = 1_000;

    fn request(user_id: i64, items: &[(i64, u32)]) -> OrderRequest {
        OrderRequest {
            user_id,
            items: items.to_vec(),
        }
    }

    fn new_order(request: &OrderRequest) -> Result<NewOrder, Invalid> {
        NewOrder::parse(request, MAX_LINES)
    }

    fn message(r: Result<NewOrder, Invalid>) -> String {
        match r {
            Err(Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
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
    fn an_order_has_a_bounded_number_of_lines() {
        let items: Vec<(i64, u32)> = (1..=MAX_LINES as i64 + 1).map(|sku| (sku, 1)).collect();
        let refused = message(new_order(&request(1, &items)));
        assert_eq!(refused, "items: at most 1000 lines per order, got 1001");
        assert_eq!(
            new_order(&request(1, &items[..MAX_LINES]))
                .unwrap()
                .lines
                .len(),
            MAX_LINES
        );
    }

    #[test]
    fn ids_are_positive_and_their_refusal_names_the_field() {
        assert_eq!(OrderId::parse("order_id", 7).map(OrderId::get), Ok(7));
        assert_eq!(
            OrderId::parse("order_id", 0),
            Err(Invalid("order_id must be greater than 0, got 0".into()))
        );
        assert_eq!(
            Sku::parse("sku", -3),
            Err(Invalid("sku must be greater than 0, got -3".into()))
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in ["new", "awaiting payment", "failed", "payed", "cancelled"] {
            assert_eq!(Status::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(Status::parse("paid"), None);
    }

    #[test]
    fn transitions() {
        use Status::*;
        let to = |s, e| Ok(Transition::To(s, e));
        assert_eq!(
            AwaitingPayment.apply(Action::Pay),
            to(Payed, StockEffect::WriteOff)
        );
        assert_eq!(Payed.apply(Action::Pay), Ok(Transition::Unchanged));
        for refused in [New, Failed, Cancelled] {
            assert_eq!(refused.apply(Action::Pay), Err(Refused));
        }
        assert_eq!(
            AwaitingPayment.apply(Action::Cancel),
            to(Cancelled, StockEffect::Release)
        );
        assert_eq!(
            New.apply(Action::Cancel),
            to(Cancelled, StockEffect::Nothing)
        );
        assert_eq!(Cancelled.apply(Action::Cancel), Ok(Transition::Unchanged));
        for refused in [Failed, Payed] {
            assert_eq!(refused.apply(Action::Cancel), Err(Refused));
        }
        assert_eq!(Status::created(true), AwaitingPayment);
        assert_eq!(Status::created(false), Failed);
        // Every history ends in its status and follows allowed transitions from `new`.
        for status in Status::ALL {
            let history = status.history();
            assert_eq!(history.first(), Some(&New));
            assert_eq!(history.last(), Some(&status));
        }
    }
}
