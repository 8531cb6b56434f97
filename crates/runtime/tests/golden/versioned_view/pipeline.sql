-- A versioned view (Flink's pattern): `rate_history` is an append-only log of rate changes with
-- no primary key; a view keeping the last row per currency by event time makes it a versioned
-- table keyed by currency, so an event-time temporal join prices each order at the rate valid
-- when it was placed, exactly as against a table declared with PRIMARY KEY (golden case
-- temporal_joins gives the same rows). The view's computed column passes through.
CREATE TABLE orders (
  order_id   BIGINT,
  user_id    STRING,
  store_id   STRING,
  currency   STRING,
  amount     BIGINT,
  ordered_at TIMESTAMP(3),
  WATERMARK FOR ordered_at AS ordered_at - INTERVAL '5' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/orders.csv', 'format' = 'csv');

CREATE TABLE rate_history (
  currency   STRING,
  rate       BIGINT,
  updated_at TIMESTAMP(3),
  WATERMARK FOR updated_at AS updated_at - INTERVAL '5' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/rate_history.csv', 'format' = 'csv');

CREATE VIEW rates AS
SELECT currency, rate, rate * 10 AS mills, updated_at
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY currency ORDER BY updated_at DESC) AS rownum
  FROM rate_history
) WHERE rownum = 1;

CREATE TABLE priced_orders WITH ('connector' = 'files', 'path' = 'out/priced_orders', 'format' = 'csv');
CREATE TABLE order_rates WITH ('connector' = 'files', 'path' = 'out/order_rates', 'format' = 'csv');

INSERT INTO priced_orders
SELECT o.order_id, o.currency, o.amount, r.rate, o.amount * r.rate AS cents
FROM orders AS o
JOIN rates FOR SYSTEM_TIME AS OF o.ordered_at AS r ON o.currency = r.currency;

INSERT INTO order_rates
SELECT o.order_id, o.ordered_at, r.mills, r.updated_at
FROM orders o
LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ordered_at r ON r.currency = o.currency;
