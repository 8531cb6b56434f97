-- Nexmark q1: Currency conversion. Convert each bid value from dollars to euros.
-- Source: nexmark/nexmark nexmark-flink/src/main/resources/queries/q1.sql (Apache License 2.0)
-- Upstream commit: eb6c5a81318c537d832e6f3764b80463c0017358
-- Changes from the published text: none.

-- -------------------------------------------------------------------------------------------------
-- Query1: Currency conversion
-- -------------------------------------------------------------------------------------------------
-- Convert each bid value from dollars to euros. Illustrates a simple transformation.
-- -------------------------------------------------------------------------------------------------

CREATE TABLE nexmark_q1 (
  auction  BIGINT,
  bidder  BIGINT,
  price  DECIMAL(23, 3),
  `dateTime`  TIMESTAMP(3),
  extra  VARCHAR
) WITH (
  'connector' = 'blackhole'
);

INSERT INTO nexmark_q1
SELECT
    auction,
    bidder,
    0.908 * price as price, -- convert dollar to euro
    `dateTime`,
    extra
FROM bid;
