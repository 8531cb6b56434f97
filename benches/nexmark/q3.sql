-- Nexmark q3: Local Item Suggestion. Who is selling in OR, ID or CA in category 10, and for what auction ids?
-- Source: nexmark/nexmark nexmark-flink/src/main/resources/queries/q3.sql (Apache License 2.0)
-- Upstream commit: 0f96e93c85ae6f5c29116f8b736e95cb5dc5a318
-- Changes from the published text: none.

-- -------------------------------------------------------------------------------------------------
-- Query 3: Local Item Suggestion
-- -------------------------------------------------------------------------------------------------
-- Who is selling in OR, ID or CA in category 10, and for what auction ids?
-- Illustrates an incremental join (using per-key state and timer) and filter.
-- -------------------------------------------------------------------------------------------------

CREATE TABLE nexmark_q3 (
  name  VARCHAR,
  city  VARCHAR,
  state  VARCHAR,
  id  BIGINT
) WITH (
  'connector' = 'blackhole'
);

INSERT INTO nexmark_q3
SELECT
    P.name, P.city, P.state, A.id
FROM
    auction AS A INNER JOIN person AS P on A.seller = P.id
WHERE
    A.category = 10 and (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');
