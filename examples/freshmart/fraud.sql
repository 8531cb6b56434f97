-- FreshMart fraud stream: the seeds' velocity check. A card used four or more times within
-- 60 seconds raises an alert, served from the `fraud_alerts` table within seconds.
SET 'pipeline.name' = 'fraud';

CREATE TABLE orders (
  order_id    BIGINT,
  store_id    VARCHAR,
  customer_id VARCHAR,
  card_id     VARCHAR,
  amount      DECIMAL(10, 2),
  event_time  TIMESTAMP(3),
  WATERMARK FOR event_time AS event_time - INTERVAL '2' SECOND
) WITH (
  'connector' = 'log',
  'topic' = 'orders',
  'format' = 'json',
  'scan.startup.mode' = 'earliest-offset'
);

CREATE TABLE fraud_alerts (
  order_id       BIGINT,
  card_id        VARCHAR,
  store_id       VARCHAR,
  amount         DECIMAL(10, 2),
  event_time     TIMESTAMP(3),
  tx_last_minute BIGINT,
  PRIMARY KEY (order_id) NOT ENFORCED
) WITH ('connector' = 'table');

INSERT INTO fraud_alerts
SELECT order_id, card_id, store_id, amount, event_time, tx_last_minute
FROM (
  SELECT order_id, card_id, store_id, amount, event_time,
         COUNT(*) OVER (PARTITION BY card_id ORDER BY event_time
                        RANGE BETWEEN INTERVAL '60' SECOND PRECEDING AND CURRENT ROW) AS tx_last_minute
  FROM orders
)
WHERE tx_last_minute >= 4;
