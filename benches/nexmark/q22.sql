-- Nexmark q22: Get URL Directories (Not in original suite). What is the directory structure of the URL?
-- Source: nexmark/nexmark nexmark-flink/src/main/resources/queries/q22.sql (Apache License 2.0)
-- Upstream commit: unknown (not in the stored index; see the note below)
-- Changes from the published text: none.
-- Note: q22.sql is NOT in the stored index of nexmark/nexmark (no commit or path holds it). The text below is
--       taken from a third-party document that quotes upstream master's raw q22.sql verbatim. It agrees
--       with the upstream README's description of q22 and with older copies (sink named discard_sink) in DBSP's
--       Nexmark doc comments. It has not been checked against the upstream file itself.

-- -------------------------------------------------------------------------------------------------
-- Query 22: Get URL Directories (Not in original suite)
-- -------------------------------------------------------------------------------------------------
-- What is the directory structure of the URL?
-- Illustrates a SPLIT_INDEX SQL.
-- -------------------------------------------------------------------------------------------------

CREATE TABLE nexmark_q22 (
      auction  BIGINT,
      bidder  BIGINT,
      price  BIGINT,
      channel  VARCHAR,
      dir1  VARCHAR,
      dir2  VARCHAR,
      dir3  VARCHAR
) WITH (
    'connector' = 'blackhole'
);

INSERT INTO nexmark_q22
SELECT
    auction, bidder, price, channel,
    SPLIT_INDEX(url, '/', 3) as dir1,
    SPLIT_INDEX(url, '/', 4) as dir2,
    SPLIT_INDEX(url, '/', 5) as dir3 FROM bid;
