//! The controls' routes, for a service's admin scope, and how their errors answer.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use platform::admin::Admin;
use platform::http::error_response;
use rdkafka::error::KafkaError;

use super::{ConsumerControl, ControlError, RedriveRequest, ReplayRequest, TopicQuery};

/// The routes, for a service's admin scope: `GET /consumer`, `POST /consumer/pause`,
/// `POST /consumer/resume`, `POST /consumer/replay`, `GET /consumer/dead-letters?topic=`,
/// `POST /consumer/dead-letters/redrive`.
pub fn configure(config: &mut web::ServiceConfig, control: Arc<dyn ConsumerControl>) {
    config
        .app_data(web::Data::from(control))
        .route("/consumer", web::get().to(state))
        .route("/consumer/pause", web::post().to(pause))
        .route("/consumer/resume", web::post().to(resume))
        .route("/consumer/replay", web::post().to(replay))
        .route("/consumer/dead-letters", web::get().to(dead_letters))
        .route("/consumer/dead-letters/redrive", web::post().to(redrive));
}

async fn state(_: Admin, control: web::Data<dyn ConsumerControl>) -> HttpResponse {
    HttpResponse::Ok().json(control.state())
}

async fn pause(_: Admin, control: web::Data<dyn ConsumerControl>) -> HttpResponse {
    control.set_paused(true).map_or_else(|e| e.response(), |state| HttpResponse::Ok().json(state))
}

async fn resume(_: Admin, control: web::Data<dyn ConsumerControl>) -> HttpResponse {
    control.set_paused(false).map_or_else(|e| e.response(), |state| HttpResponse::Ok().json(state))
}

async fn replay(_: Admin, control: web::Data<dyn ConsumerControl>, request: web::Json<ReplayRequest>) -> HttpResponse {
    match control.replay(request.into_inner()).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(error) => error.response(),
    }
}

async fn dead_letters(
    _: Admin,
    control: web::Data<dyn ConsumerControl>,
    query: web::Query<TopicQuery>,
) -> HttpResponse {
    match control.dead_letters(&query.topic).await {
        Ok(letters) => HttpResponse::Ok().json(letters),
        Err(error) => error.response(),
    }
}

async fn redrive(
    _: Admin,
    control: web::Data<dyn ConsumerControl>,
    request: web::Json<RedriveRequest>,
) -> HttpResponse {
    match control.redrive(request.into_inner()).await {
        Ok(redriven) => HttpResponse::Ok().json(redriven),
        Err(error) => error.response(),
    }
}

impl ControlError {
    fn response(&self) -> HttpResponse {
        let (status, code) = match self {
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Busy => (StatusCode::CONFLICT, "replay_running"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Broker(error) if is_refused_by_acl(error) => {
                // Not an outage: this service's principal may not do it (decision 0028), e.g.
                // a redrive onto the topic it consumes, which only the relay and `dlq` write.
                let message = format!(
                    "{self}; this service's Kafka principal is not allowed to do that (a redrive goes through the dlq tool)"
                );
                return error_response(StatusCode::FORBIDDEN, "not_allowed_by_broker", message);
            }
            Self::Broker(_) | Self::Stalled(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        error_response(status, code, self.to_string())
    }
}

/// Whether the broker refused because of an ACL, not because it is unwell.
fn is_refused_by_acl(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(Code::TopicAuthorizationFailed | Code::GroupAuthorizationFailed | Code::ClusterAuthorizationFailed)
    )
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    use super::ControlError;

    #[test]
    fn a_refusal_by_the_brokers_acls_is_403_and_an_outage_503() {
        let refused = ControlError::Broker(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert_eq!(refused.response().status(), 403);
        let down = ControlError::Broker(KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown));
        assert_eq!(down.response().status(), 503);
    }
}
