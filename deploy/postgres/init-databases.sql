-- Creates the order service's database and role on a shared PostgreSQL server.
-- Safe to run twice (psql script: uses \gexec, so run it with psql, as the postgres image's
-- /docker-entrypoint-initdb.d does):
--   psql -v ON_ERROR_STOP=1 -U postgres -f deploy/postgres/init-databases.sql

SELECT 'CREATE ROLE order_user LOGIN PASSWORD ''order_pass'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'order_user')\gexec

SELECT 'CREATE DATABASE orderdb OWNER order_user'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orderdb')\gexec

GRANT ALL PRIVILEGES ON DATABASE orderdb TO order_user;

\connect orderdb
-- PostgreSQL 15 no longer lets every role create objects in schema public.
GRANT ALL ON SCHEMA public TO order_user;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO order_user;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO order_user;
