//! DescribeConfigs (key 32), versions 1 to 4: the effective configs of topics and of this
//! broker, each with its source, synonyms (if asked) and documentation (v3+, if asked).
//!
//! Owner: any shard; answers from its metadata image and the broker configuration, without a
//! cross-shard call. Topic values come from the topic's overrides (TOPIC_CONFIG) or from the
//! broker setting that is their synonym (STATIC_BROKER_CONFIG when set in the file or on the
//! command line, DEFAULT_CONFIG otherwise), unless a dynamic broker setting (DYNAMIC_BROKER_CONFIG
//! or DYNAMIC_DEFAULT_BROKER_CONFIG, altered at runtime) stands in between. Broker settings that
//! cannot change at runtime are reported read-only. The BROKER resource lists every setting the
//! broker has (`config::CONFIG_DEFS`), Kafka's names of its shorthands beside them, with the
//! effective values (the listeners really served, retention derived from
//! `log.retention.hours` as Kafka does) and, if asked, every synonym with its own source.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::broker::ShardContext;
use crate::config::topic::TopicValueSource;
use crate::config::{CONFIG_DEFS, ConfigDef, KAFKA_ALIASES, ValueKind, topic};
use crate::kafka::admin::{self, resource_type, text};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::metadata::topic_name::validate_topic_name;

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 4 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DescribeConfigs,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    futures::future::ready(answer(&context, &request)).boxed_local()
}

/// What to include with each config.
#[derive(Clone, Copy)]
struct Detail {
    synonyms: bool,
    documentation: bool,
}

fn answer(context: &ShardContext, request: &Request) -> HandlerOutcome {
    let body: DescribeConfigsRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let detail = Detail {
        synonyms: body.include_synonyms,
        documentation: request.version() >= 3 && body.include_documentation,
    };
    let results = body
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.as_str();
            let wanted = |key: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
            };
            let refused = admin::config_resource_refused(
                context,
                &request.session,
                crate::acl::operation::DESCRIBE_CONFIGS,
                resource.resource_type,
                name,
            );
            let outcome = match resource.resource_type {
                _ if refused.is_some() => Err(refused.expect("checked")),
                resource_type::TOPIC => describe_topic(context, name, &wanted, detail),
                resource_type::BROKER => admin::check_broker_resource(context, name)
                    .map_err(|message| (ResponseError::InvalidRequest.code(), message))
                    .map(|()| describe_broker(context, &wanted, detail)),
                other => Err((
                    ResponseError::InvalidRequest.code(),
                    format!("Unsupported resource type {other}"),
                )),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match outcome {
                Ok(configs) => result.with_configs(configs),
                Err((code, message)) => result
                    .with_error_code(code)
                    .with_error_message(Some(text(message))),
            }
        })
        .collect();
    request.respond(&DescribeConfigsResponse::default().with_results(results))
}

type Configs = Vec<DescribeConfigsResourceResult>;

fn describe_topic(
    context: &ShardContext,
    name: &str,
    wanted: &dyn Fn(&str) -> bool,
    detail: Detail,
) -> Result<Configs, (i16, String)> {
    if let Err(reason) = validate_topic_name(name) {
        return Err((ResponseError::InvalidTopicException.code(), reason));
    }
    let image = context.image();
    let topic = image.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition.code(),
            format!("Topic {name} does not exist"),
        )
    })?;
    let broker = image.broker_values(&context.config);
    Ok(topic::resolve_all(&topic.configs, &broker)
        .into_iter()
        .filter(|resolved| wanted(resolved.def.name))
        .map(|resolved| {
            let mut entry = DescribeConfigsResourceResult::default()
                .with_name(text(resolved.def.name))
                .with_value(Some(text(resolved.value.clone())))
                .with_read_only(false)
                .with_config_source(resolved.source.kafka_code())
                .with_config_type(resolved.def.kind().kafka_type());
            if detail.documentation {
                entry = entry.with_documentation(Some(text(resolved.def.doc())));
            }
            if detail.synonyms {
                let mut synonyms = Vec::new();
                if let Some(value) = topic.configs.get(resolved.def.name) {
                    let code = topic::TopicValueSource::Topic.kafka_code();
                    synonyms.push(synonym(resolved.def.name, value, code));
                }
                for found in broker.synonyms(resolved.def.broker_synonym) {
                    synonyms.push(synonym(found.name, &found.value, found.source.kafka_code()));
                }
                entry = entry.with_synonyms(synonyms);
            }
            entry
        })
        .collect())
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(text(name))
        .with_value(Some(text(value)))
        .with_source(source)
}

/// Every broker setting, under its own key and, for the settings the broker keys by its own
/// shorthand, also under Kafka's names (`node.id`, `broker.id`, `log.dirs`, `log.dir`), each
/// with its effective value: the listeners this node really serves when `listeners` and
/// `advertised.listeners` are not set, the bound port when `listen` asked for port 0, and null
/// for a numeric setting with no value (as Kafka's `log.retention.minutes`).
fn describe_broker(
    context: &ShardContext,
    wanted: &dyn Fn(&str) -> bool,
    detail: Detail,
) -> Configs {
    let image = context.image();
    let broker = image.broker_values(&context.config);
    let own = CONFIG_DEFS.iter().map(|def| (def.name, def));
    let kafka_names = KAFKA_ALIASES.iter().filter_map(|&(alias, canonical)| {
        crate::config::config_def(canonical).map(|def| (alias, def))
    });
    own.chain(kafka_names)
        .filter(|(name, _)| wanted(name))
        .map(|(name, def)| {
            let (value, source) = effective(context, &broker, def);
            // Secrets (Kafka's PASSWORD settings) are reported as sensitive, without a value.
            let sensitive = matches!(def.kind, ValueKind::Password);
            let value = value.filter(|_| !sensitive);
            let mut result = DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(name))
                .with_value(value.map(text))
                .with_is_sensitive(sensitive)
                .with_read_only(!topic::is_dynamic_broker_config(def.name))
                .with_config_source(source.kafka_code())
                .with_config_type(def.kind.kafka_type());
            if detail.documentation {
                result = result.with_documentation(Some(StrBytes::from_static_str(def.doc)));
            }
            if detail.synonyms {
                let synonyms = broker
                    .synonyms(def.name)
                    .into_iter()
                    .map(|found| {
                        // A shorthand's sources are listed under the name asked for.
                        let key = if found.name == def.name {
                            name
                        } else {
                            found.name
                        };
                        let mut entry = synonym(key, &found.value, found.source.kafka_code());
                        if sensitive {
                            entry.value = None;
                        }
                        entry
                    })
                    .collect();
                result = result.with_synonyms(synonyms);
            }
            result
        })
        .collect()
}

/// The effective value of broker setting `def` and its source.
fn effective(
    context: &ShardContext,
    broker: &topic::BrokerValues<'_>,
    def: &ConfigDef,
) -> (Option<String>, TopicValueSource) {
    let (value, source) = broker.get(def.name);
    let source_of = |key: &str| broker.get(key).1;
    match def.name {
        "listen" => (Some(context.listen_addr.to_string()), source),
        "advertised-listener" if value.is_empty() => (Some(context.advertised.to_string()), source),
        "listeners" if value.is_empty() => (
            Some(format!("PLAINTEXT://{}", context.listen_addr)),
            source_of("listen"),
        ),
        "advertised.listeners" if value.is_empty() => {
            let from = if source_of("advertised-listener") == TopicValueSource::Default {
                source_of("listen")
            } else {
                source_of("advertised-listener")
            };
            (Some(format!("PLAINTEXT://{}", context.advertised)), from)
        }
        _ if value.is_empty() && !matches!(def.kind, ValueKind::Text) => (None, source),
        _ => (Some(value), source),
    }
}
