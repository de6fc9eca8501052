-- Transactional outbox: one row per order event, written in the transaction of the change.
-- The relay publishes rows in id order and deletes each only after Kafka acknowledged it.
CREATE TABLE IF NOT EXISTS outbox (
    id         BIGSERIAL PRIMARY KEY,
    topic      TEXT NOT NULL,
    -- Message key: the order id, so that all events of an order share a partition.
    key        TEXT NOT NULL,
    payload    BYTEA NOT NULL,
    -- Kafka headers, name to value.
    headers    JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
