-- Nexmark q13: Bounded Side Input Join (Not in original suite). Joins a stream to a bounded side input, modeling basic stream enrichment.
-- Source: nexmark/nexmark nexmark-flink/src/main/resources/queries/q13.sql (Apache License 2.0)
-- Upstream commit: a8da211c09d0cf35e0ed22a5292389c3b7a3f0ae
-- Changes from the published text: none.
-- Note: Needs a side_input table (legacy 'connector.type' = 'filesystem' CSV at ${FLINK_HOME}/data/side_input.txt,
--       made by upstream's bin/side_input_gen.sh). Uses PROCTIME() and FOR SYSTEM_TIME AS OF (a processing-time lookup join).

-- -------------------------------------------------------------------------------------------------
-- Query 13: Bounded Side Input Join (Not in original suite)
-- -------------------------------------------------------------------------------------------------
-- Joins a stream to a bounded side input, modeling basic stream enrichment.
-- -------------------------------------------------------------------------------------------------

-- TODO: use the new "filesystem" connector once FLINK-17397 is done
CREATE TABLE side_input (
  key BIGINT,
  `value` VARCHAR
) WITH (
  'connector.type' = 'filesystem',
  'connector.path' = 'file://${FLINK_HOME}/data/side_input.txt',
  'format.type' = 'csv'
);

CREATE TABLE nexmark_q13 (
  auction  BIGINT,
  bidder  BIGINT,
  price  BIGINT,
  `dateTime`  TIMESTAMP(3),
  `value`  VARCHAR
) WITH (
  'connector' = 'blackhole'
);

INSERT INTO nexmark_q13
SELECT
    B.auction,
    B.bidder,
    B.price,
    B.`dateTime`,
    S.`value`
FROM (SELECT *, PROCTIME() as p_time FROM bid) B
JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S
ON mod(B.auction, 10000) = S.key;
