-- Stream joins. An interval join: each order with the payments made for it within an hour
-- after it (an inner join, and a LEFT join that also lists unpaid orders, emitted once the
-- watermark shows no payment can come). A window join: per user and hour, orders and clicks
-- of the same hourly window. A regular join with a dimension table (files, bounded): every
-- order with its store's city, unknown stores kept by the LEFT join.
CREATE TABLE orders (
  order_id   BIGINT,
  user_id    STRING,
  store_id   STRING,
  amount     BIGINT,
  ordered_at TIMESTAMP(3),
  WATERMARK FOR ordered_at AS ordered_at - INTERVAL '5' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/orders.csv', 'format' = 'csv');

CREATE TABLE payments (
  order_id BIGINT,
  paid     BIGINT,
  paid_at  TIMESTAMP(3),
  WATERMARK FOR paid_at AS paid_at - INTERVAL '5' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/payments.csv', 'format' = 'csv');

CREATE TABLE clicks (
  user_id    STRING,
  clicked_at TIMESTAMP(3),
  WATERMARK FOR clicked_at AS clicked_at - INTERVAL '5' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/clicks.csv', 'format' = 'csv');

CREATE TABLE stores (
  store_id STRING,
  city     STRING
) WITH ('connector' = 'files', 'path' = 'input/stores.csv', 'format' = 'csv');

CREATE TABLE paid_orders WITH ('connector' = 'files', 'path' = 'out/paid_orders', 'format' = 'csv');
CREATE TABLE order_payments WITH ('connector' = 'files', 'path' = 'out/order_payments', 'format' = 'csv');
CREATE TABLE hourly_activity WITH ('connector' = 'files', 'path' = 'out/hourly_activity', 'format' = 'csv');
CREATE TABLE orders_by_city WITH ('connector' = 'files', 'path' = 'out/orders_by_city', 'format' = 'csv');

INSERT INTO paid_orders
SELECT o.order_id, o.amount, p.paid, p.paid_at
FROM orders o JOIN payments p
  ON o.order_id = p.order_id
 AND p.paid_at BETWEEN o.ordered_at AND o.ordered_at + INTERVAL '1' HOUR;

INSERT INTO order_payments
SELECT o.order_id, o.ordered_at, p.paid
FROM orders o LEFT JOIN payments p
  ON o.order_id = p.order_id
 AND p.paid_at BETWEEN o.ordered_at AND o.ordered_at + INTERVAL '1' HOUR;

CREATE VIEW hourly_orders AS
SELECT window_start, window_end, user_id, COUNT(*) AS orders, SUM(amount) AS spent
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))
GROUP BY window_start, window_end, user_id;

CREATE VIEW hourly_clicks AS
SELECT window_start, window_end, user_id, COUNT(*) AS clicks
FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(clicked_at), INTERVAL '1' HOUR))
GROUP BY window_start, window_end, user_id;

INSERT INTO hourly_activity
SELECT c.window_start, c.user_id, c.clicks, o.orders, o.spent
FROM hourly_clicks c LEFT JOIN hourly_orders o
  ON c.user_id = o.user_id AND c.window_start = o.window_start AND c.window_end = o.window_end;

INSERT INTO orders_by_city
SELECT o.order_id, o.store_id, s.city
FROM orders o LEFT JOIN stores s ON o.store_id = s.store_id;
