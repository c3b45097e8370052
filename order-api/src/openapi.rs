//! The OpenAPI 3 document of the REST API, written by hand (`openapi.json`) and served as is;
//! a test checks that it lists exactly the routes of [`crate::routes::ROUTES`].

pub const DOCUMENT: &str = include_str!("openapi.json");
