-- One view feeds two INSERTs into two sinks: a windowed aggregate and a stateless filter.
-- The source is read once (rows_read counts every input row, including the ones the view
-- drops).
CREATE TABLE clicks (
  user_id STRING,
  page    STRING,
  ms      INT,
  ts      TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '10' SECOND
) WITH (
  'connector' = 'files',
  'path' = 'input/clicks',
  'format' = 'json'
);

CREATE VIEW real_clicks AS
SELECT user_id, lower(page) AS page, ms, ts
FROM clicks
WHERE user_id <> 'bot';

CREATE TABLE page_minutes WITH ('connector' = 'files', 'path' = 'out/page_minutes', 'format' = 'csv');
CREATE TABLE slow_clicks WITH ('connector' = 'files', 'path' = 'out/slow_clicks', 'format' = 'csv');

INSERT INTO page_minutes
SELECT window_start, page, COUNT(*) AS clicks, COUNT(DISTINCT user_id) AS users
FROM TABLE(TUMBLE(TABLE real_clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end, page;

INSERT INTO slow_clicks
SELECT user_id, page, ms FROM real_clicks WHERE ms > 500;
