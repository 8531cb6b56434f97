-- Running totals per store, over the `orders` topic (load it as in stream.sql), in update
-- mode: a plain GROUP BY has no final answer on a stream, so every --emit-interval the stores
-- whose totals changed are printed again, and written keyed by store_id for an upsert.
--   flowline run examples/orders/store_totals.sql --mode stream --emit-interval 500ms
--   flowline run examples/orders/store_totals.sql --mode batch      (each total once)

SET 'pipeline.name' = 'store-totals';

CREATE TABLE orders (
  order_id    BIGINT,
  store_id    VARCHAR,
  customer_id VARCHAR,
  amount      DECIMAL(10, 2),
  event_time  TIMESTAMP(3),
  WATERMARK FOR event_time AS event_time - INTERVAL '5' MINUTE
) WITH (
  'connector' = 'log',
  'topic' = 'orders',
  'format' = 'json'
);

-- One JSON file per checkpoint epoch; the last row per store_id is its current total.
CREATE TABLE store_totals (
  store_id  VARCHAR,
  orders    BIGINT,
  revenue   DECIMAL(38, 2),
  customers BIGINT,
  PRIMARY KEY (store_id) NOT ENFORCED
) WITH (
  'connector' = 'files',
  'path' = 'out/stream/store_totals',
  'format' = 'json'
);

CREATE TABLE store_totals_console WITH ('connector' = 'print');

INSERT INTO store_totals
SELECT store_id, COUNT(*) AS orders, SUM(amount) AS revenue, COUNT(DISTINCT customer_id) AS customers
FROM orders
GROUP BY store_id;

INSERT INTO store_totals_console
SELECT store_id, COUNT(*) AS orders, SUM(amount) AS revenue
FROM orders
GROUP BY store_id;
