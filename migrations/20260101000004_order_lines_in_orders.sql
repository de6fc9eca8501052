-- An order's lines never change once it is made, and are always read whole: they move into the
-- order's row, as two arrays sorted by sku (one entry per sku, duplicates of a request summed).
-- Reading an order becomes one index lookup, and making one writes one row per order instead of
-- one plus one per sku.
ALTER TABLE orders ADD COLUMN skus BIGINT[], ADD COLUMN counts BIGINT[];

UPDATE orders o
SET skus = l.skus, counts = l.counts
FROM (
    SELECT order_id, array_agg(sku ORDER BY sku) AS skus, array_agg(count ORDER BY sku) AS counts
    FROM order_items
    GROUP BY order_id
) l
WHERE l.order_id = o.id;

UPDATE orders SET skus = '{}', counts = '{}' WHERE skus IS NULL;

ALTER TABLE orders
    ALTER COLUMN skus SET NOT NULL,
    ALTER COLUMN counts SET NOT NULL,
    ADD CONSTRAINT orders_lines_match CHECK (cardinality(skus) = cardinality(counts)),
    ADD CONSTRAINT orders_counts_positive CHECK (0 < ALL (counts));

DROP TABLE order_items;
