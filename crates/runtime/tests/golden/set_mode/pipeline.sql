-- The file chooses its mode, batch size and name with SET; the runner's default run (no mode
-- on the command line) must honour them. The watermark has no delay: a row equal to the
-- newest event time is on time, and a window fires once a row of the next window arrives.
SET 'execution.mode' = 'stream';
SET 'execution.batch-size' = '2';
SET 'pipeline.name' = 'set-mode-golden';
SET 'rejects.path' = 'bad/rejects.jsonl';

CREATE TABLE events (
  kind     STRING,
  event_at TIMESTAMP(3),
  WATERMARK FOR event_at AS event_at
) WITH (
  'connector' = 'files',
  'path' = 'input/events.csv',
  'format' = 'csv'
);

CREATE TABLE per_minute WITH ('connector' = 'files', 'path' = 'out/per_minute', 'format' = 'csv');

INSERT INTO per_minute
SELECT window_start, kind, COUNT(*) AS events
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(event_at), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end, kind;
