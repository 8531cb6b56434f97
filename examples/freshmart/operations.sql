-- FreshMart operations view: revenue and orders per store per minute, published by
-- micro-batches (the mode and trigger come from the project's 5-minute freshness target).
SET 'pipeline.name' = 'operations';

CREATE TABLE orders (
  order_id    BIGINT,
  store_id    VARCHAR,
  customer_id VARCHAR,
  card_id     VARCHAR,
  amount      DECIMAL(10, 2),
  event_time  TIMESTAMP(3),
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
  'connector' = 'log',
  'topic' = 'orders',
  'format' = 'json',
  'scan.startup.mode' = 'earliest-offset'
);

CREATE TABLE store_minutes (
  store_id     VARCHAR,
  window_start TIMESTAMP(3),
  window_end   TIMESTAMP(3),
  orders       BIGINT,
  revenue      DECIMAL(38, 2),
  PRIMARY KEY (store_id, window_start) NOT ENFORCED
) WITH ('connector' = 'table');

INSERT INTO store_minutes
SELECT store_id, window_start, window_end, COUNT(*) AS orders, SUM(amount) AS revenue
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
GROUP BY store_id, window_start, window_end;
