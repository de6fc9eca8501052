-- Stock of goods. `reserved` may exceed `total_count` in the seed data; the API never sells
-- more than total_count - reserved.
CREATE TABLE IF NOT EXISTS stocks (
    sku         BIGINT PRIMARY KEY,
    total_count BIGINT NOT NULL CHECK (total_count >= 0),
    reserved    BIGINT NOT NULL CHECK (reserved >= 0)
);

CREATE TABLE IF NOT EXISTS orders (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    status     TEXT NOT NULL
        CHECK (status IN ('new', 'awaiting payment', 'failed', 'payed', 'cancelled')),
    -- Number of the last event of this order; the next event gets event_seq + 1.
    event_seq  BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per sku of an order: duplicate skus of a request are summed.
CREATE TABLE IF NOT EXISTS order_items (
    order_id BIGINT NOT NULL REFERENCES orders (id),
    sku      BIGINT NOT NULL,
    count    BIGINT NOT NULL CHECK (count > 0),
    PRIMARY KEY (order_id, sku)
);
