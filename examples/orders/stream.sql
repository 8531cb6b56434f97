-- FreshMart orders as a stream over the embedded log: hourly windows per store, written
-- exactly once as the watermark passes them. From the repository root:
--   flowline log create orders --partitions 4
--   for f in examples/orders/data/orders/dt=*/*.csv; do
--     flowline log produce orders --key store_id --format csv --file "$f"; done
--   flowline run examples/orders/stream.sql --mode stream          (Ctrl-C: final checkpoint)
--   flowline run examples/orders/stream.sql --mode micro-batch --trigger available-now
-- kill -9 and restart at any moment: no gap, no duplicate.

SET 'pipeline.name' = 'orders-stream';
SET 'execution.checkpointing.interval' = '2s';

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
  'format' = 'json',
  'scan.startup.mode' = 'group-offsets',
  'properties.group.id' = 'orders-stream'
);

-- Hourly orders and revenue per store: one JSON file per checkpoint epoch.
CREATE TABLE hourly_store_orders WITH (
  'connector' = 'files',
  'path' = 'out/stream/hourly_store_orders',
  'format' = 'json'
);

-- Hourly totals of the whole chain, printed as each hour closes.
CREATE TABLE hourly_totals WITH ('connector' = 'print');

INSERT INTO hourly_store_orders
SELECT window_start, window_end, store_id,
       COUNT(*) AS orders, SUM(amount) AS revenue, COUNT(DISTINCT customer_id) AS customers
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(event_time), INTERVAL '1' HOUR))
WHERE amount > 0
GROUP BY window_start, window_end, store_id;

INSERT INTO hourly_totals
SELECT window_start AS hour, COUNT(*) AS orders, SUM(amount) AS revenue
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(event_time), INTERVAL '1' HOUR))
GROUP BY window_start, window_end;
