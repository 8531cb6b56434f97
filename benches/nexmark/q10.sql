-- Nexmark q10: Log to File System (Not in original suite). Log all events to file system.
-- Source: nexmark/nexmark nexmark-flink/src/main/resources/queries/q10.sql (Apache License 2.0)
-- Upstream commit: a8da211c09d0cf35e0ed22a5292389c3b7a3f0ae
-- Changes from the published text: none.
-- Flowline: not applicable: it measures a partitioned filesystem sink with processing-time partition commit (`sink.partition-commit.*`, `${NEXMARK_DIR}`, `${SUBMIT_TIME}`), not query processing; Flowline's files sink commits atomically per run or per checkpoint instead.
-- Note: The sink is a partitioned 'filesystem' table, not 'blackhole'; ${NEXMARK_DIR} and ${SUBMIT_TIME} are
--       placeholders that the upstream runner (QueryRunner.java) fills in.

-- -------------------------------------------------------------------------------------------------
-- Query 10: Log to File System (Not in original suite)
-- -------------------------------------------------------------------------------------------------
-- Log all events to file system. Illustrates windows streaming data into partitioned file system.
--
-- Every minute, save all events from the last period into partitioned log files.
-- -------------------------------------------------------------------------------------------------

CREATE TABLE nexmark_q10 (
  auction  BIGINT,
  bidder  BIGINT,
  price  BIGINT,
  `dateTime`  TIMESTAMP(3),
  extra  VARCHAR,
  dt STRING,
  hm STRING
) PARTITIONED BY (dt, hm) WITH (
  'connector' = 'filesystem',
  'path' = 'file://${NEXMARK_DIR}/data/output/${SUBMIT_TIME}/bid/',
  'format' = 'csv',
  'sink.partition-commit.trigger' = 'partition-time',
  'sink.partition-commit.delay' = '1 min',
  'sink.partition-commit.policy.kind' = 'success-file',
  'partition.time-extractor.timestamp-pattern' = '$dt $hm:00',
  'sink.rolling-policy.rollover-interval' = '1min',
  'sink.rolling-policy.check-interval' = '1min'
);

INSERT INTO nexmark_q10
SELECT auction, bidder, price, `dateTime`, extra, DATE_FORMAT(`dateTime`, 'yyyy-MM-dd'), DATE_FORMAT(`dateTime`, 'HH:mm')
FROM bid;
