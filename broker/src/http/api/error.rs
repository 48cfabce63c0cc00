//! The one mapping of a refusal to HTTP: the status the gRPC code has in
//! Google's API design guide (the table grpc-gateway uses too), and a JSON
//! body with the gRPC code's name and the message, as the gRPC call says
//! it: `{"code": "FAILED_PRECONDITION", "message": "..."}`.

use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_proto::json::status_json;
use tonic::{Code, Status};

use crate::service::RequestError;

/// Why an API request was refused.
#[derive(Debug)]
pub struct ApiError {
    status: Status,
    /// Set only for a method the endpoint does not take (405, which has no
    /// gRPC code of its own).
    http: Option<StatusCode>,
}

impl ApiError {
    /// INVALID_ARGUMENT naming `field`, worded by the services' own
    /// [`RequestError::invalid`].
    pub fn invalid(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Status::from(RequestError::invalid(field, reason.to_string())).into()
    }

    /// 405 for `method` on an endpoint that does not take it.
    pub fn method_not_allowed(method: &Method, path: &str) -> Self {
        Self {
            status: Status::unimplemented(format!("{path} does not take {method}")),
            http: Some(StatusCode::METHOD_NOT_ALLOWED),
        }
    }
}

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        Self { status, http: None }
    }
}

/// The HTTP status of a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // 499, "client closed request": no constant in `http`.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let http = self.http.unwrap_or_else(|| http_status(self.status.code()));
        let mut response = (http, Json(status_json(&self.status))).into_response();
        if http == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
