//! order-api through real HTTP against a real PostgreSQL (a fresh database per test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod auth;
mod binary;
mod common;
mod compat;
mod graphql;
mod graphql_requests;
mod openapi;
mod outage;
mod replica;
mod replica_client;
mod rest;
mod shared_reads;
mod traces;
mod traces_tls;
