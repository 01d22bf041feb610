//! Structured logs through `tracing`, and, when `telemetry.otlp_endpoint` is
//! set, spans exported over OTLP so that one trace follows a request through
//! every instance it reaches. `RUST_LOG` filters the logs; `log_format` picks
//! text or JSON.
//!
//! The spans exported are only ours: `request` (every HTTP request but the
//! peer door's QUERY and COMMAND), `peer request` (a QUERY or COMMAND served,
//! continuing the sender's trace from the `traceparent` in its signed
//! envelope) and `peer call` (a request to a peer, whose `traceparent` goes
//! into the envelope). A process serves one instance, whose name is the
//! service name.

mod otlp;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};
use crate::federation::traceparent::TraceParent;

/// Names of the spans exported (see the module's comment).
pub const REQUEST: &str = "request";
pub const PEER_REQUEST: &str = "peer request";
pub const PEER_CALL: &str = "peer call";
/// The HTTP span of a QUERY or COMMAND: logged, not exported, since the
/// `peer request` inside it is the server span of the sender's trace.
pub const PEER_DOOR: &str = "peer door";

/// Whether spans are exported: without it nothing below reads or writes a
/// trace context, so the request path pays only for creating its spans.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Logs only (commands that serve no instance).
pub fn init(format: LogFormat) {
    let _ = install(format, None);
}

/// Flushes the spans still waiting when dropped or shut down.
pub struct Exporter(Option<SdkTracerProvider>);

impl Exporter {
    pub fn shutdown(mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: spans not all exported at shutdown: {e}");
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Logs, and span export when `telemetry.otlp_endpoint` is set: batches
/// every `telemetry.otlp_export_interval`, sent through `runtime` by our own
/// HTTP client. Call from outside the runtime; shut the result down before
/// the runtime stops, so the last batch goes out.
pub fn init_with_export(config: &Config, runtime: &tokio::runtime::Handle) -> anyhow::Result<Exporter> {
    let Some(endpoint) = &config.otlp_endpoint else {
        init(config.log_format);
        return Ok(Exporter(None));
    };
    let provider = otlp::provider(config, endpoint, runtime.clone())?;
    install(config.log_format, Some(provider.tracer("mosaic")))?;
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Exporter(Some(provider)))
}

fn install(format: LogFormat, tracer: Option<SdkTracer>) -> Result<(), tracing_subscriber::util::TryInitError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // bollard's debug logs carry container definitions, environment (user
    // secrets) included: never below info, whatever RUST_LOG asks.
    let filter = filter.add_directive("bollard=info".parse().expect("static directive"));
    // Colour codes only for a terminal, never into a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs.json().with_filter(filter).boxed(),
        LogFormat::Text => logs.with_filter(filter).boxed(),
    };
    // Its own filter: spans are exported whatever RUST_LOG keeps in the logs,
    // and only ours (events stay in the logs).
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(tracing_subscriber::filter::filter_fn(exported))
    });
    tracing_subscriber::registry().with(logs).with(otel).try_init()
}

fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("mosaic") && [REQUEST, PEER_REQUEST, PEER_CALL].contains(&meta.name())
}

/// Records the span's trace id in its `trace_id` field, so every log line
/// inside it carries the id (text and JSON alike).
pub fn mark_trace(span: &Span) {
    if !exporting() {
        return;
    }
    let id = span.context().span().span_context().trace_id();
    if id != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(id));
    }
}

/// Makes `span` (not yet entered) continue a peer's trace when its
/// `traceparent` is well formed; a malformed one is ignored (the span then
/// begins a trace of its own).
pub fn continue_trace(span: &Span, traceparent: Option<&str>) {
    if !exporting() {
        return;
    }
    if let Some(tp) = traceparent.and_then(TraceParent::parse) {
        let remote = SpanContext::new(
            TraceId::from_bytes(tp.trace_id),
            opentelemetry::trace::SpanId::from_bytes(tp.span_id),
            TraceFlags::new(tp.flags),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    mark_trace(span);
}

/// The `traceparent` naming `span` as the parent of what the next hop does.
pub fn traceparent(span: &Span) -> Option<String> {
    if !exporting() {
        return None;
    }
    let context = span.context();
    let sc = context.span().span_context().clone();
    sc.is_valid().then(|| {
        TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        }
        .to_string()
    })
}
