-- Drops the table and every order in it. On a database adopted from the existing service this
-- removes the Flyway-created table as well: never run it against production data.
DROP TABLE IF EXISTS orders;
