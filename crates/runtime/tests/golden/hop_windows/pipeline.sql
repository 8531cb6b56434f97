-- Sliding (HOP) windows of 20 minutes every 10 minutes over JSON lines: each reading counts
-- in two windows. The second INSERT uses named TVF arguments and a HAVING filter after the
-- window aggregate.
CREATE TABLE readings (
  sensor       STRING,
  reading_time TIMESTAMP(3),
  `value`      INT,
  WATERMARK FOR reading_time AS reading_time - INTERVAL '1' MINUTE
) WITH (
  'connector' = 'files',
  'path' = 'input/readings.jsonl',
  'format' = 'json'
);

CREATE TABLE per_sensor WITH ('connector' = 'files', 'path' = 'out/per_sensor', 'format' = 'csv');
CREATE TABLE busy_windows WITH ('connector' = 'files', 'path' = 'out/busy_windows', 'format' = 'csv');

INSERT INTO per_sensor
SELECT window_start, window_end, sensor,
       COUNT(*) AS readings, SUM(`value`) AS total, MAX(`value`) AS peak
FROM TABLE(HOP(TABLE readings, DESCRIPTOR(reading_time), INTERVAL '10' MINUTE, INTERVAL '20' MINUTE))
GROUP BY window_start, window_end, sensor;

INSERT INTO busy_windows
SELECT window_start, window_end, COUNT(*) AS readings
FROM TABLE(HOP(
  DATA => TABLE readings,
  TIMECOL => DESCRIPTOR(reading_time),
  SLIDE => INTERVAL '10' MINUTE,
  SIZE => INTERVAL '20' MINUTE))
GROUP BY window_start, window_end
HAVING COUNT(*) >= 3;
