//! Access control lists and the built-in authorizer (KIP-11 semantics, as Kafka's
//! `StandardAuthorizer` applies them).
//!
//! Owner: the bindings live in the metadata image (`MetadataImage::acls`): shard 0's controller
//! adds and removes them through the metadata log (`AclCreated`/`AclDeleted` records), and every
//! shard checks requests against its own immutable image, so a check is a local, lock-free
//! lookup. The authorizer's static settings (`authorizer.class.name`, `super.users`,
//! `allow.everyone.if.no.acl.found`) come from the broker config; with no authorizer
//! configured nothing is checked at all (`ShardContext::authorize` is one `None` test).
//!
//! Rules, as Kafka's: a super user may do anything; otherwise the ACLs whose pattern matches
//! the resource are gathered (LITERAL with the same name or `*`, PREFIXED whose name is a
//! prefix of the resource's); an ACL applies to the request if its principal is the request's
//! or `User:*` and its host is the client's address or `*`. A DENY for the operation (or ALL)
//! wins; then an ALLOW for the operation, for ALL, or for an operation that implies it
//! (READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS)
//! allows. When no ACL at all matches the resource, `allow.everyone.if.no.acl.found` decides.
//!
//! Principals: a connection is `User:ANONYMOUS` from its peer address (`Session`) unless its
//! listener authenticates it: on an SSL listener the client certificate's mapped subject
//! (`net::tls`), set before its first request is dispatched; on a SASL_PLAINTEXT listener
//! `User:<name>` once SASL authentication (`security::sasl`) succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Kafka's `ResourceType` codes.
pub mod resource_type {
    /// Not a known type.
    pub const UNKNOWN: i8 = 0;
    /// Any type (filters only).
    pub const ANY: i8 = 1;
    /// A topic.
    pub const TOPIC: i8 = 2;
    /// A consumer group.
    pub const GROUP: i8 = 3;
    /// The cluster (name `kafka-cluster`).
    pub const CLUSTER: i8 = 4;
    /// A transactional id.
    pub const TRANSACTIONAL_ID: i8 = 5;
    /// A delegation token.
    pub const DELEGATION_TOKEN: i8 = 6;
    /// A user.
    pub const USER: i8 = 7;
}

/// Kafka's `PatternType` codes.
pub mod pattern_type {
    /// Not a known pattern type.
    pub const UNKNOWN: i8 = 0;
    /// Any pattern type (filters only).
    pub const ANY: i8 = 1;
    /// Every pattern that matches a name (filters only).
    pub const MATCH: i8 = 2;
    /// The exact name, or `*` for every resource of the type.
    pub const LITERAL: i8 = 3;
    /// Every resource whose name starts with the pattern's name.
    pub const PREFIXED: i8 = 4;
}

/// Kafka's `AclOperation` codes.
pub mod operation {
    /// Not a known operation.
    pub const UNKNOWN: i8 = 0;
    /// Any operation (filters only).
    pub const ANY: i8 = 1;
    /// Every operation.
    pub const ALL: i8 = 2;
    /// Read.
    pub const READ: i8 = 3;
    /// Write.
    pub const WRITE: i8 = 4;
    /// Create.
    pub const CREATE: i8 = 5;
    /// Delete.
    pub const DELETE: i8 = 6;
    /// Alter.
    pub const ALTER: i8 = 7;
    /// Describe.
    pub const DESCRIBE: i8 = 8;
    /// Cluster actions (inter-broker).
    pub const CLUSTER_ACTION: i8 = 9;
    /// Describe configs.
    pub const DESCRIBE_CONFIGS: i8 = 10;
    /// Alter configs.
    pub const ALTER_CONFIGS: i8 = 11;
    /// Idempotent write.
    pub const IDEMPOTENT_WRITE: i8 = 12;
    /// Create delegation tokens.
    pub const CREATE_TOKENS: i8 = 13;
    /// Describe delegation tokens.
    pub const DESCRIBE_TOKENS: i8 = 14;
}

/// Kafka's `AclPermissionType` codes.
pub mod permission {
    /// Not a known permission.
    pub const UNKNOWN: i8 = 0;
    /// Any permission (filters only).
    pub const ANY: i8 = 1;
    /// Deny.
    pub const DENY: i8 = 2;
    /// Allow.
    pub const ALLOW: i8 = 3;
}

/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The wildcard resource name, host and principal name.
pub const WILDCARD: &str = "*";
/// The principal of a connection that has not authenticated (no client certificate).
pub const ANONYMOUS: &str = "User:ANONYMOUS";
const WILDCARD_USER: &str = "User:*";

/// Who sent a request and from where. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `Type:Name`, e.g. `User:ANONYMOUS`.
    pub principal: String,
    /// The client's address, as ACL hosts name it.
    pub host: String,
    /// The client listener the connection came in on (its index in `Config::listeners`):
    /// Metadata answers with that listener's advertised address.
    pub listener: usize,
}

impl Session {
    /// The session of an unauthenticated connection from `peer`.
    pub fn anonymous(peer: Option<IpAddr>) -> Session {
        Session {
            principal: ANONYMOUS.to_string(),
            host: peer.map_or_else(|| WILDCARD.to_string(), |ip| ip.to_string()),
            listener: 0,
        }
    }
}

/// One ACL: a resource pattern and an access control entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// `resource_type` code.
    pub resource_type: i8,
    /// Resource name (or prefix).
    pub resource_name: String,
    /// `pattern_type` code: LITERAL or PREFIXED.
    pub pattern_type: i8,
    /// `Type:Name`.
    pub principal: String,
    /// Client address or `*`.
    pub host: String,
    /// `operation` code.
    pub operation: i8,
    /// `permission` code.
    pub permission: i8,
}

/// Why an ACL or a filter was refused (INVALID_REQUEST in Kafka).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAcl(pub String);

fn is_principal(text: &str) -> bool {
    text.split_once(':')
        .is_some_and(|(kind, name)| !kind.is_empty() && !name.is_empty())
}

impl AclBinding {
    /// Kafka's checks of an ACL to create.
    pub fn validate(&self) -> Result<(), InvalidAcl> {
        let invalid = |what: String| Err(InvalidAcl(what));
        if !(resource_type::TOPIC..=resource_type::USER).contains(&self.resource_type) {
            return invalid(format!("Invalid resourceType {}", self.resource_type));
        }
        if self.pattern_type != pattern_type::LITERAL && self.pattern_type != pattern_type::PREFIXED
        {
            return invalid(format!("Invalid patternType {}", self.pattern_type));
        }
        if !(operation::ALL..=operation::DESCRIBE_TOKENS).contains(&self.operation) {
            return invalid(format!("Invalid operation {}", self.operation));
        }
        if self.permission != permission::DENY && self.permission != permission::ALLOW {
            return invalid(format!("Invalid permissionType {}", self.permission));
        }
        if self.resource_name.is_empty() {
            return invalid("Resource name should not be empty".to_string());
        }
        if self.resource_type == resource_type::CLUSTER && self.resource_name != CLUSTER_NAME {
            return invalid(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        if !is_principal(&self.principal) {
            return invalid(format!(
                "Could not parse principal '{}': expected Type:Name",
                self.principal
            ));
        }
        if self.host.is_empty() {
            return invalid("Host should not be empty".to_string());
        }
        Ok(())
    }
}

/// A filter of DescribeAcls and DeleteAcls (Kafka's `AclBindingFilter`): `None` fields and
/// the ANY codes match everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    /// `resource_type` code or ANY.
    pub resource_type: i8,
    /// Name to match, or any.
    pub resource_name: Option<String>,
    /// `pattern_type` code, ANY or MATCH.
    pub pattern_type: i8,
    /// Principal to match, or any.
    pub principal: Option<String>,
    /// Host to match, or any.
    pub host: Option<String>,
    /// `operation` code or ANY.
    pub operation: i8,
    /// `permission` code or ANY.
    pub permission: i8,
}

impl AclFilter {
    /// Refuses filters with unknown codes, as Kafka does.
    pub fn validate(&self) -> Result<(), InvalidAcl> {
        let known = (resource_type::ANY..=resource_type::USER).contains(&self.resource_type)
            && (pattern_type::ANY..=pattern_type::PREFIXED).contains(&self.pattern_type)
            && (operation::ANY..=operation::DESCRIBE_TOKENS).contains(&self.operation)
            && (permission::ANY..=permission::ALLOW).contains(&self.permission);
        if known {
            Ok(())
        } else {
            Err(InvalidAcl(
                "The filter has an unknown resource type, pattern type, operation or \
                 permission type"
                    .to_string(),
            ))
        }
    }

    /// Whether `binding` matches the filter.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let any = |code: i8, want: i8, have: i8| want == code || want == have;
        if !any(
            resource_type::ANY,
            self.resource_type,
            binding.resource_type,
        ) || !any(operation::ANY, self.operation, binding.operation)
            || !any(permission::ANY, self.permission, binding.permission)
        {
            return false;
        }
        if self
            .principal
            .as_ref()
            .is_some_and(|p| *p != binding.principal)
            || self.host.as_ref().is_some_and(|h| *h != binding.host)
        {
            return false;
        }
        let pattern = self.pattern_type;
        if pattern != pattern_type::ANY
            && pattern != pattern_type::MATCH
            && pattern != binding.pattern_type
        {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if pattern != pattern_type::MATCH {
            return *name == binding.resource_name;
        }
        match binding.pattern_type {
            pattern_type::LITERAL => {
                *name == binding.resource_name || binding.resource_name == WILDCARD
            }
            pattern_type::PREFIXED => name.starts_with(&binding.resource_name),
            _ => false,
        }
    }
}

/// The principal, host, operation and permission of an ACL (its entry).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AclEntry {
    principal: String,
    host: String,
    operation: i8,
    permission: i8,
}

/// A resource pattern: type, pattern type and name.
type PatternKey = (i8, i8, String);

/// Every ACL of the cluster, indexed by resource pattern so a check looks at the few that can
/// match. Serialised as a plain list of bindings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<AclBinding>", into = "Vec<AclBinding>")]
pub struct AclSet {
    by_pattern: BTreeMap<PatternKey, BTreeSet<AclEntry>>,
    count: usize,
}

impl From<Vec<AclBinding>> for AclSet {
    fn from(bindings: Vec<AclBinding>) -> AclSet {
        let mut set = AclSet::default();
        for binding in bindings {
            set.insert(binding);
        }
        set
    }
}

impl From<AclSet> for Vec<AclBinding> {
    fn from(set: AclSet) -> Vec<AclBinding> {
        set.iter().collect()
    }
}

impl AclSet {
    /// Number of ACLs.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds `binding`; false if it was there already.
    pub fn insert(&mut self, binding: AclBinding) -> bool {
        let (key, entry) = split(binding);
        let added = self.by_pattern.entry(key).or_default().insert(entry);
        self.count += usize::from(added);
        added
    }

    /// Removes `binding`; false if it was not there.
    pub fn remove(&mut self, binding: &AclBinding) -> bool {
        let (key, entry) = split(binding.clone());
        let Some(entries) = self.by_pattern.get_mut(&key) else {
            return false;
        };
        let removed = entries.remove(&entry);
        if entries.is_empty() {
            self.by_pattern.remove(&key);
        }
        self.count -= usize::from(removed);
        removed
    }

    /// Whether `binding` is present.
    pub fn contains(&self, binding: &AclBinding) -> bool {
        let (key, entry) = split(binding.clone());
        self.by_pattern
            .get(&key)
            .is_some_and(|entries| entries.contains(&entry))
    }

    /// Every binding, ordered by resource pattern.
    pub fn iter(&self) -> impl Iterator<Item = AclBinding> + '_ {
        self.by_pattern
            .iter()
            .flat_map(|((rt, pt, name), entries)| {
                entries.iter().map(move |e| AclBinding {
                    resource_type: *rt,
                    resource_name: name.clone(),
                    pattern_type: *pt,
                    principal: e.principal.clone(),
                    host: e.host.clone(),
                    operation: e.operation,
                    permission: e.permission,
                })
            })
    }

    /// The bindings `filter` matches.
    pub fn matching(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.iter().filter(|b| filter.matches(b)).collect()
    }

    /// The entries of every pattern that matches resource `name` of `resource`.
    fn entries_for<'a>(
        &'a self,
        resource: i8,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclEntry> + 'a {
        let literal = |n: &str| {
            self.by_pattern
                .get(&(resource, pattern_type::LITERAL, n.to_string()))
        };
        let exact = literal(name);
        let wildcard = if name == WILDCARD {
            None
        } else {
            literal(WILDCARD)
        };
        let start = (resource, pattern_type::PREFIXED, String::new());
        let end = (resource, pattern_type::PREFIXED + 1, String::new());
        let prefixed = self
            .by_pattern
            .range(start..end)
            .filter(move |((_, _, prefix), _)| name.starts_with(prefix.as_str()))
            .map(|(_, entries)| entries);
        exact
            .into_iter()
            .chain(wildcard)
            .chain(prefixed)
            .flat_map(|entries| entries.iter())
    }
}

fn split(binding: AclBinding) -> (PatternKey, AclEntry) {
    (
        (
            binding.resource_type,
            binding.pattern_type,
            binding.resource_name,
        ),
        AclEntry {
            principal: binding.principal,
            host: binding.host,
            operation: binding.operation,
            permission: binding.permission,
        },
    )
}

/// The authorizer's static settings (broker config). See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorizer {
    /// Principals allowed everything (`super.users`).
    pub super_users: Vec<String>,
    /// The answer when no ACL matches the resource (`allow.everyone.if.no.acl.found`).
    pub allow_everyone_if_no_acl_found: bool,
}

/// Whether an ALLOW for `granted` also allows `wanted`.
fn implies(granted: i8, wanted: i8) -> bool {
    granted == wanted
        || granted == operation::ALL
        || (wanted == operation::DESCRIBE
            && matches!(
                granted,
                operation::READ | operation::WRITE | operation::DELETE | operation::ALTER
            ))
        || (wanted == operation::DESCRIBE_CONFIGS && granted == operation::ALTER_CONFIGS)
}

impl Authorizer {
    /// Whether `session` may perform `op` on resource `name` of type `resource`.
    pub fn authorize(
        &self,
        acls: &AclSet,
        session: &Session,
        op: i8,
        resource: i8,
        name: &str,
    ) -> bool {
        if self.super_users.contains(&session.principal) {
            return true;
        }
        let mut any_acl = false;
        let mut allowed = false;
        for entry in acls.entries_for(resource, name) {
            any_acl = true;
            let applies = (entry.principal == session.principal
                || (entry.principal == WILDCARD_USER && session.principal.starts_with("User:")))
                && (entry.host == WILDCARD || entry.host == session.host);
            if !applies {
                continue;
            }
            if entry.permission == permission::DENY
                && (entry.operation == op || entry.operation == operation::ALL)
            {
                return false;
            }
            if entry.permission == permission::ALLOW && implies(entry.operation, op) {
                allowed = true;
            }
        }
        if !any_acl {
            return self.allow_everyone_if_no_acl_found;
        }
        allowed
    }

    /// Whether `session` may perform `op` on at least one resource of type `resource` (Kafka's
    /// `authorizeByResourceType`, KIP-679: an idempotent producer needs WRITE on some topic).
    /// An ALLOW for `op` or ALL counts unless a DENY covers everything it allows.
    pub fn authorize_any(&self, acls: &AclSet, session: &Session, op: i8, resource: i8) -> bool {
        // A name no ACL names: super users, `allow.everyone.if.no.acl.found` and wildcard
        // ALLOWs decide it the way they decide every resource of the type.
        if self.authorize(acls, session, op, resource, "\u{0}unnamed") {
            return true;
        }
        let mut deny_literals: Vec<&str> = Vec::new();
        let mut deny_prefixes: Vec<&str> = Vec::new();
        let mut allows: Vec<(i8, &str)> = Vec::new();
        for ((rt, pattern, name), entries) in &acls.by_pattern {
            if *rt != resource {
                continue;
            }
            for entry in entries {
                let applies = (entry.principal == session.principal
                    || (entry.principal == WILDCARD_USER
                        && session.principal.starts_with("User:")))
                    && (entry.host == WILDCARD || entry.host == session.host)
                    && (entry.operation == op || entry.operation == operation::ALL);
                if !applies {
                    continue;
                }
                match (entry.permission, *pattern) {
                    (permission::DENY, pattern_type::LITERAL) => deny_literals.push(name),
                    (permission::DENY, _) => deny_prefixes.push(name),
                    (_, kind) => allows.push((kind, name)),
                }
            }
        }
        if deny_literals.contains(&WILDCARD) || deny_prefixes.contains(&"") {
            return false;
        }
        allows.into_iter().any(|(kind, name)| {
            let prefix_denied = deny_prefixes.iter().any(|p| name.starts_with(p));
            match kind {
                pattern_type::LITERAL => {
                    name == WILDCARD || (!prefix_denied && !deny_literals.contains(&name))
                }
                _ => !prefix_denied,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        rt: i8,
        name: &str,
        pt: i8,
        principal: &str,
        host: &str,
        op: i8,
        perm: i8,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.to_string(),
            pattern_type: pt,
            principal: principal.to_string(),
            host: host.to_string(),
            operation: op,
            permission: perm,
        }
    }

    fn session() -> Session {
        Session::anonymous(Some("10.0.0.1".parse().unwrap()))
    }

    #[test]
    fn deny_wins_and_implied_operations() {
        use operation::*;
        use pattern_type::*;
        use resource_type::*;
        let authorizer = Authorizer {
            super_users: vec![],
            allow_everyone_if_no_acl_found: false,
        };
        let mut acls = AclSet::default();
        let s = session();
        assert!(!authorizer.authorize(&acls, &s, READ, TOPIC, "t"));
        acls.insert(acl(
            TOPIC,
            "t",
            LITERAL,
            "User:*",
            "*",
            READ,
            permission::ALLOW,
        ));
        assert!(authorizer.authorize(&acls, &s, READ, TOPIC, "t"));
        assert!(authorizer.authorize(&acls, &s, DESCRIBE, TOPIC, "t"));
        assert!(!authorizer.authorize(&acls, &s, WRITE, TOPIC, "t"));
        acls.insert(acl(
            TOPIC,
            "t",
            LITERAL,
            ANONYMOUS,
            "10.0.0.1",
            ALL,
            permission::DENY,
        ));
        assert!(!authorizer.authorize(&acls, &s, READ, TOPIC, "t"));
        let other = Session::anonymous(Some("10.0.0.2".parse().unwrap()));
        assert!(authorizer.authorize(&acls, &other, READ, TOPIC, "t"));
        acls.insert(acl(
            TOPIC,
            "pre",
            PREFIXED,
            "User:*",
            "*",
            WRITE,
            permission::ALLOW,
        ));
        assert!(authorizer.authorize(&acls, &s, WRITE, TOPIC, "prefix-topic"));
        assert!(!authorizer.authorize(&acls, &s, WRITE, TOPIC, "pr"));
        acls.insert(acl(
            GROUP,
            "*",
            LITERAL,
            "User:*",
            "*",
            ALTER_CONFIGS,
            permission::ALLOW,
        ));
        assert!(authorizer.authorize(&acls, &s, DESCRIBE_CONFIGS, GROUP, "g"));
        let su = Authorizer {
            super_users: vec![ANONYMOUS.to_string()],
            allow_everyone_if_no_acl_found: false,
        };
        assert!(su.authorize(&acls, &s, READ, TOPIC, "t"));
        let open = Authorizer {
            super_users: vec![],
            allow_everyone_if_no_acl_found: true,
        };
        assert!(open.authorize(&acls, &s, READ, TOPIC, "no-acls"));
        assert!(!open.authorize(&acls, &s, READ, TOPIC, "t"));
        // Some topic is writable (the prefixed ALLOW); none once everything is denied.
        assert!(authorizer.authorize_any(&acls, &s, WRITE, TOPIC));
        assert!(!authorizer.authorize_any(&acls, &s, DELETE, TOPIC));
        acls.insert(acl(
            TOPIC,
            "",
            PREFIXED,
            "User:*",
            "*",
            WRITE,
            permission::DENY,
        ));
        assert!(!authorizer.authorize_any(&acls, &s, WRITE, TOPIC));
        assert!(open.authorize_any(&AclSet::default(), &s, WRITE, TOPIC));
    }

    #[test]
    fn filters_and_validation() {
        use pattern_type::*;
        use resource_type::*;
        let a = acl(
            TOPIC,
            "*",
            LITERAL,
            "User:a",
            "*",
            operation::READ,
            permission::ALLOW,
        );
        let b = acl(
            TOPIC,
            "fo",
            PREFIXED,
            "User:b",
            "*",
            operation::READ,
            permission::DENY,
        );
        let c = acl(
            GROUP,
            "foo",
            LITERAL,
            "User:a",
            "*",
            operation::READ,
            permission::ALLOW,
        );
        let set = AclSet::from(vec![a.clone(), b.clone(), c.clone()]);
        assert_eq!(set.len(), 3);
        let filter = |rt, name: Option<&str>, pt| AclFilter {
            resource_type: rt,
            resource_name: name.map(str::to_string),
            pattern_type: pt,
            principal: None,
            host: None,
            operation: operation::ANY,
            permission: permission::ANY,
        };
        assert_eq!(
            set.matching(&filter(resource_type::ANY, None, pattern_type::ANY))
                .len(),
            3
        );
        assert_eq!(
            set.matching(&filter(TOPIC, Some("foo"), MATCH)),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(
            set.matching(&filter(resource_type::ANY, Some("foo"), LITERAL)),
            vec![c.clone()]
        );
        assert!(filter(0, None, LITERAL).validate().is_err());
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(serde_json::from_str::<AclSet>(&json).unwrap(), set);
        assert!(a.validate().is_ok());
        let mut bad = a.clone();
        bad.pattern_type = MATCH;
        assert!(bad.validate().is_err());
        let mut bad = a.clone();
        bad.resource_type = CLUSTER;
        assert!(bad.validate().is_err());
        let mut bad = a;
        bad.principal = "nobody".to_string();
        assert!(bad.validate().is_err());
    }
}
