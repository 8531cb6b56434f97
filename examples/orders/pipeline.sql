-- FreshMart orders: the seeds' daily revenue per store and hourly windows over orders.
-- Run as a nightly batch or as a stream; both give the same answer:
--   flowline run examples/orders/pipeline.sql --mode batch
--   flowline run examples/orders/pipeline.sql --mode stream

CREATE TABLE orders (
  order_id    BIGINT,
  store_id    VARCHAR,
  customer_id VARCHAR,
  amount      DECIMAL(10, 2),
  event_time  TIMESTAMP(3),
  dt          DATE,            -- from the Hive folder dt=YYYY-MM-DD/
  WATERMARK FOR event_time AS event_time - INTERVAL '5' MINUTE
) WITH (
  'connector' = 'files',
  'path' = 'data/orders',
  'format' = 'csv'
);

-- Daily revenue per store, one folder per day.
CREATE TABLE daily_revenue WITH (
  'connector' = 'files',
  'path' = 'out/daily_revenue',
  'format' = 'csv',
  'partition-by' = 'day'
);

-- Hourly order counts and distinct customers per store.
CREATE TABLE hourly_orders WITH (
  'connector' = 'files',
  'path' = 'out/hourly_orders',
  'format' = 'parquet'
);

-- The whole chain's daily totals, printed as they close.
CREATE TABLE daily_totals WITH ('connector' = 'print');

CREATE VIEW valid_orders AS
SELECT * FROM orders WHERE amount > 0;

INSERT INTO daily_revenue
SELECT CAST(window_start AS DATE) AS day, store_id,
       SUM(amount) AS revenue, COUNT(*) AS orders, AVG(amount) AS avg_order
FROM TABLE(TUMBLE(TABLE valid_orders, DESCRIPTOR(event_time), INTERVAL '1' DAY))
GROUP BY window_start, window_end, store_id;

INSERT INTO hourly_orders
SELECT window_start, window_end, store_id,
       COUNT(*) AS orders, COUNT(DISTINCT customer_id) AS customers,
       MIN(amount) AS smallest, MAX(amount) AS largest
FROM TABLE(TUMBLE(TABLE valid_orders, DESCRIPTOR(event_time), INTERVAL '1' HOUR))
GROUP BY window_start, window_end, store_id;

INSERT INTO daily_totals
SELECT window_start AS day, SUM(amount) AS revenue, COUNT(*) AS orders
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(event_time), INTERVAL '1' DAY))
GROUP BY window_start, window_end;
