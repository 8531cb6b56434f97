-- OVER aggregates with a state TTL: a card's running count and total hold for transactions
-- at most an hour after its newest one (event time); a card idle longer starts afresh, as in
-- Flink when its state expired. c1 pauses from 10:30 to 11:30, exactly an hour: its totals
-- carry on; then from 11:30 to 12:31: they start again. c2's 10:05 arrives after 10:10 but
-- within the watermark delay, so it still counts in time order. The ROWS frame (last three
-- transactions) forgets the same way. Batch, stream and restored runs agree, whatever the
-- batch sizes and watermarks.
SET 'table.exec.state.ttl' = '1 h';

CREATE TABLE transactions (
  card_id  STRING,
  amount   BIGINT,
  tx_time  TIMESTAMP(3),
  WATERMARK FOR tx_time AS tx_time - INTERVAL '10' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/transactions.csv', 'format' = 'csv');

CREATE TABLE running WITH ('connector' = 'files', 'path' = 'out/running', 'format' = 'csv');
CREATE TABLE recent WITH ('connector' = 'files', 'path' = 'out/recent', 'format' = 'csv');

INSERT INTO running
SELECT card_id, tx_time,
  COUNT(*) OVER (PARTITION BY card_id ORDER BY tx_time) AS tx_so_far,
  SUM(amount) OVER (PARTITION BY card_id ORDER BY tx_time) AS spent_so_far
FROM transactions;

INSERT INTO recent
SELECT card_id, tx_time,
  SUM(amount) OVER (PARTITION BY card_id ORDER BY tx_time ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS last_three
FROM transactions;
