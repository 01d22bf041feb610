//! The OTLP/HTTP (protobuf) span exporter, sending through our reqwest
//! client (rustls with ring, our trust store) rather than a client of the
//! exporter's choosing.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};

use crate::config::Config;

/// One export may take this long, answer included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// A collector's answer is a small status message; more is not read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub fn provider(config: &Config, endpoint: &str, runtime: tokio::runtime::Handle) -> anyhow::Result<SdkTracerProvider> {
    let client = crate::federation::tls::client_builder(config.federation.ca_file.as_deref())?
        .timeout(EXPORT_TIMEOUT)
        .build()
        .context("telemetry.otlp_endpoint: building the HTTP client")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OnRuntime { client, runtime })
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("telemetry.otlp_endpoint")?;
    // The batch processor exports from a thread of its own, off the request path.
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(config.otlp_export_interval)
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(
            Resource::builder()
                .with_service_name(config.instance_name.clone())
                .build(),
        )
        .build())
}

/// Sends on the tokio runtime: the batch processor's thread is not one of
/// its workers, and awaiting a task's handle needs none.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        self.runtime
            .spawn(async move {
                let mut answer = client.execute(request).await?;
                let mut response = Response::builder().status(answer.status());
                let mut body = Vec::new();
                while let Some(chunk) = answer.chunk().await? {
                    if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                        return Err(format!("the collector's answer exceeds {MAX_ANSWER_BYTES} bytes").into());
                    }
                    body.extend_from_slice(&chunk);
                }
                if let Some(headers) = response.headers_mut() {
                    *headers = answer.headers().clone();
                }
                Ok(response.body(Bytes::from(body))?)
            })
            .await?
    }
}
