-- CSV options on both sides: a headerless, semicolon-separated source with a custom
-- timestamp format, and a headerless, pipe-separated sink. DOUBLE sums and averages.
CREATE TABLE trips (
  trip_id INT,
  city    STRING,
  started TIMESTAMP(3),
  km      DOUBLE,
  WATERMARK FOR started AS started - INTERVAL '15' MINUTE
) WITH (
  'connector' = 'files',
  'path' = 'input/trips.txt',
  'format' = 'csv',
  'csv.header' = 'false',
  'csv.field-delimiter' = ';',
  'timestamp-format' = '%d/%m/%Y %H:%M'
);

CREATE TABLE city_km WITH (
  'connector' = 'files',
  'path' = 'out/city_km',
  'format' = 'csv',
  'csv.header' = 'false',
  'csv.field-delimiter' = '|'
);

INSERT INTO city_km
SELECT window_start, city, COUNT(*) AS trips, SUM(km) AS km, AVG(km) AS avg_km
FROM TABLE(TUMBLE(TABLE trips, DESCRIPTOR(started), INTERVAL '6' HOUR))
GROUP BY window_start, window_end, city;
