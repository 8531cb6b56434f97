-- Retractions: HAVING and a GROUP BY over a GROUP BY, in update mode. Both need the old
-- result of a group taken back when it changes: ann matches the HAVING after two orders
-- (2, 30.00) and stops matching at her third (110.00), so her row must be deleted; in the
-- histogram a customer moves from "1 order" to "2 orders", so the outer aggregate subtracts
-- her from one bucket before adding her to the next, and the "1 order" bucket, empty at the
-- end, is deleted. Sinks that can receive deletes declare a last column `_change_type`,
-- which the sink fills with 'upsert' or 'delete'; upserting by key and dropping deleted keys
-- gives this batch answer in every mode.
CREATE TABLE orders (
  order_id BIGINT,
  customer STRING,
  store    STRING,
  amount   DECIMAL(10, 2),
  ts       TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'files', 'path' = 'input/orders.csv', 'format' = 'csv');

CREATE TABLE loyal_customers (
  customer     STRING,
  orders       BIGINT,
  spent        DECIMAL(20, 2),
  _change_type STRING,
  PRIMARY KEY (customer) NOT ENFORCED
) WITH ('connector' = 'files', 'path' = 'out/loyal_customers', 'format' = 'csv');

CREATE TABLE order_count_histogram (
  orders          BIGINT,
  customers       BIGINT,
  biggest_spender DECIMAL(20, 2),
  stores          BIGINT,
  _change_type    STRING
) WITH ('connector' = 'files', 'path' = 'out/order_count_histogram', 'format' = 'csv');

INSERT INTO loyal_customers
SELECT customer, COUNT(*) AS orders, SUM(amount) AS spent
FROM orders
GROUP BY customer
HAVING COUNT(*) >= 2 AND SUM(amount) < 100;

INSERT INTO order_count_histogram
SELECT orders, COUNT(*) AS customers, MAX(spent) AS biggest_spender,
       COUNT(DISTINCT first_store) AS stores
FROM (
  SELECT customer, COUNT(*) AS orders, SUM(amount) AS spent, MIN(store) AS first_store
  FROM orders
  GROUP BY customer)
GROUP BY orders;
