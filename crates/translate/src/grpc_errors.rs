//! gRPC clients get gRPC statuses from the data plane, not HTTP errors. On
//! a server that serves a GRPCRoute, a request no rule matches is an error
//! (Kengine's `error` handler) rather than a written 404, like a backend
//! that cannot be reached (502, 503, 504), and the server's error routes
//! answer a gRPC request (`Content-Type: application/grpc…`) with a
//! trailers-only response: `UNIMPLEMENTED` for no route, `UNAVAILABLE`
//! otherwise, the codes gRPC's own HTTP mapping gives those statuses. Other
//! requests get what they got before: a bodiless 404, and any other error
//! raised again, so Kengine logs it as an error and answers its status.
//! Servers without GRPCRoutes are left as they are.

use std::collections::BTreeMap;

use crate::kengine::config::{Handler, MatcherSet, RegexpMatcher, Route, ServerErrors};

/// gRPC's `UNIMPLEMENTED`.
const UNIMPLEMENTED: u8 = 12;
/// gRPC's `UNAVAILABLE`.
const UNAVAILABLE: u8 = 14;

/// What a request no rule matches gets on a server that does (`grpc`) or
/// does not serve GRPCRoutes.
pub fn not_found(grpc: bool) -> Handler {
    match grpc {
        true => Handler::Error {
            status_code: "404".into(),
        },
        false => Handler::status(404),
    }
}

/// The error routes of a server that serves GRPCRoutes.
pub fn routes() -> ServerErrors {
    let is_404 = || MatcherSet {
        vars_regexp: Some(BTreeMap::from([(
            "{http.error.status_code}".to_string(),
            RegexpMatcher {
                name: None,
                pattern: "^404$".into(),
            },
        )])),
        ..Default::default()
    };
    let grpc = MatcherSet {
        header: Some(BTreeMap::from([(
            "Content-Type".to_string(),
            vec!["application/grpc*".to_string()],
        )])),
        ..Default::default()
    };
    let grpc_status = Handler::Subroute {
        routes: vec![
            Route {
                matchers: vec![is_404()],
                ..Route::handle(vec![Handler::grpc_status(
                    UNIMPLEMENTED,
                    "no route for this call",
                )])
            },
            Route::handle(vec![Handler::grpc_status(
                UNAVAILABLE,
                "the backend is unavailable",
            )]),
        ],
    };
    ServerErrors {
        routes: vec![
            Route {
                matchers: vec![grpc],
                ..Route::handle(vec![grpc_status])
            },
            Route {
                matchers: vec![is_404()],
                ..Route::handle(vec![Handler::status(404)])
            },
            Route::handle(vec![Handler::Error {
                status_code: "{http.error.status_code}".into(),
            }]),
        ],
    }
}
