-- Temporal joins. A lookup join (processing time) enriches each order with its store's city
-- from a dimension table of files, loaded before the orders and reloaded when its files
-- change; it keeps event time, so an hourly window can follow it. An event-time temporal join
-- prices each order at the exchange rate valid when it was placed: `rates` is a versioned
-- table (PRIMARY KEY and WATERMARK), each row a new rate from its time on.
CREATE TABLE orders (
  order_id   BIGINT,
  user_id    STRING,
  store_id   STRING,
  currency   STRING,
  amount     BIGINT,
  ordered_at TIMESTAMP(3),
  WATERMARK FOR ordered_at AS ordered_at - INTERVAL '5' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/orders.csv', 'format' = 'csv');

-- Cents per unit of the currency, from `updated_at` on.
CREATE TABLE rates (
  currency   STRING,
  rate       BIGINT,
  updated_at TIMESTAMP(3),
  PRIMARY KEY (currency) NOT ENFORCED,
  WATERMARK FOR updated_at AS updated_at - INTERVAL '5' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/rates.csv', 'format' = 'csv');

CREATE TABLE stores (
  store_id STRING,
  city     STRING
) WITH ('connector' = 'files', 'path' = 'input/stores.csv', 'format' = 'csv');

CREATE TABLE order_cities WITH ('connector' = 'files', 'path' = 'out/order_cities', 'format' = 'csv');
CREATE TABLE city_hourly WITH ('connector' = 'files', 'path' = 'out/city_hourly', 'format' = 'csv');
CREATE TABLE priced_orders WITH ('connector' = 'files', 'path' = 'out/priced_orders', 'format' = 'csv');
CREATE TABLE order_rates WITH ('connector' = 'files', 'path' = 'out/order_rates', 'format' = 'csv');

CREATE VIEW timed_orders AS SELECT *, PROCTIME() AS proc_time FROM orders;

-- Every order, with its store's city (NULL for a store the table does not know).
INSERT INTO order_cities
SELECT o.order_id, o.store_id, s.city
FROM timed_orders AS o
LEFT JOIN stores FOR SYSTEM_TIME AS OF o.proc_time AS s ON o.store_id = s.store_id;

CREATE VIEW orders_with_city AS
SELECT o.order_id, o.amount, o.ordered_at, s.city
FROM timed_orders o
JOIN stores FOR SYSTEM_TIME AS OF o.proc_time AS s ON o.store_id = s.store_id;

INSERT INTO city_hourly
SELECT window_start, city, SUM(amount) AS revenue, COUNT(*) AS orders
FROM TABLE(TUMBLE(TABLE orders_with_city, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))
GROUP BY window_start, window_end, city;

-- Each order at the rate of its currency when it was placed (orders before any rate of
-- their currency have none: the inner join drops them).
INSERT INTO priced_orders
SELECT o.order_id, o.currency, o.amount, r.rate, o.amount * r.rate AS cents
FROM orders AS o
JOIN rates FOR SYSTEM_TIME AS OF o.ordered_at AS r ON o.currency = r.currency;

INSERT INTO order_rates
SELECT o.order_id, o.ordered_at, r.rate, r.updated_at
FROM orders o
LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ordered_at r ON r.currency = o.currency;
