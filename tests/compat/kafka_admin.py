#!/usr/bin/env python3
"""Stand-ins for Apache Kafka's bin/kafka-topics.sh and bin/kafka-acls.sh, for librdkafka's
regression suite (`make compat`). They implement only the invocations the suite makes, over the
Kafka admin API with confluent-kafka's AdminClient, so every answer comes from the broker.
Anything else is refused with a one-line error and exit status 2; a broker-side error gives
exit status 1, as Kafka's own tools do.

  kafka-topics.sh --bootstrap-server HOST:PORT --create --topic T --partitions N
                  [--replication-factor N] [--config K=V]...        -> CreateTopics
  kafka-topics.sh --bootstrap-server HOST:PORT --delete --topic T   -> DeleteTopics
  kafka-topics.sh --bootstrap-server HOST:PORT --alter --topic T --partitions N
                                                                    -> CreatePartitions
  kafka-topics.sh --bootstrap-server HOST:PORT --list               -> Metadata
  kafka-topics.sh --bootstrap-server HOST:PORT --describe [--topic T] -> Metadata
  kafka-acls.sh   --bootstrap-server HOST:PORT --add|--remove
                  (--allow-principal P | --deny-principal P)... [--allow-host H | --deny-host H]...
                  --operation OP... (--topic T | --group G | --cluster)
                                                                    -> CreateAcls / DeleteAcls
  kafka-acls.sh   --bootstrap-server HOST:PORT --list [--topic T | --group G | --cluster]
                                                                    -> DescribeAcls
"""
import argparse
import sys

TIMEOUT_S = 30.0


class Refused(Exception):
    """Arguments this stand-in does not implement."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise Refused(message)


def die(tool, message, status):
    print(f"{tool} (ringbroker compat stand-in): {message}", file=sys.stderr)
    sys.exit(status)


def admin(bootstrap):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(TIMEOUT_S * 1000)})


def wait_all(futures):
    """Waits for every future of an admin call; returns the error messages (empty if all ok)."""
    errors = []
    for key, fut in futures.items():
        try:
            fut.result(timeout=TIMEOUT_S)
        except Exception as exc:  # KafkaException wraps the broker's KafkaError
            errors.append(f"{key}: {describe_exc(exc)}")
    return errors


def describe_exc(exc):
    err = exc.args[0] if exc.args else exc
    if hasattr(err, "name") and hasattr(err, "str"):
        return f"{err.name()}: {err.str()}"
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# kafka-topics.sh


def topics_main(argv):
    tool = "kafka-topics.sh"
    p = Parser(prog=tool, add_help=False)
    p.add_argument("--bootstrap-server", required=True)
    action = p.add_mutually_exclusive_group(required=True)
    for a in ("create", "delete", "alter", "list", "describe"):
        action.add_argument(f"--{a}", action="store_true")
    p.add_argument("--topic")
    p.add_argument("--partitions", type=int)
    p.add_argument("--replication-factor", type=int)
    p.add_argument("--config", action="append", default=[])
    try:
        args = p.parse_args(argv)
        if (args.create or args.delete or args.alter) and not args.topic:
            raise Refused("--topic is required with --create, --delete and --alter")
        if args.create and args.partitions is None:
            raise Refused("--create needs --partitions (broker-default partition counts are not supported)")
        if args.alter and (args.partitions is None or args.config):
            raise Refused("only '--alter --topic T --partitions N' is supported")
        if not args.create and (args.config or args.replication_factor is not None):
            raise Refused("--config and --replication-factor are supported only with --create")
        if (args.delete or args.list or args.describe) and args.partitions is not None:
            raise Refused("--partitions is supported only with --create and --alter")
        if args.list and args.topic:
            raise Refused("--list with --topic is not supported")
        configs = {}
        for kv in args.config:
            if "=" not in kv:
                raise Refused(f"--config expects KEY=VALUE, got '{kv}'")
            k, v = kv.split("=", 1)
            configs[k] = v
    except Refused as exc:
        die(tool, f"unsupported invocation: {exc} (args: {' '.join(argv)})", 2)

    from confluent_kafka.admin import NewPartitions, NewTopic

    a = admin(args.bootstrap_server)
    if args.create:
        rf = args.replication_factor if args.replication_factor is not None else -1
        nt = NewTopic(args.topic, num_partitions=args.partitions, replication_factor=rf, config=configs)
        errors = wait_all(a.create_topics([nt], operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S))
        if errors:
            die(tool, "CreateTopics failed: " + "; ".join(errors), 1)
        print(f"Created topic {args.topic}.")
    elif args.delete:
        errors = wait_all(a.delete_topics([args.topic], operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S))
        if errors:
            die(tool, "DeleteTopics failed: " + "; ".join(errors), 1)
    elif args.alter:
        np = NewPartitions(args.topic, args.partitions)
        errors = wait_all(a.create_partitions([np], operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S))
        if errors:
            die(tool, "CreatePartitions failed: " + "; ".join(errors), 1)
    else:
        try:
            md = a.list_topics(topic=args.topic, timeout=TIMEOUT_S)
        except Exception as exc:
            die(tool, f"Metadata failed: {describe_exc(exc)}", 1)
        names = sorted(md.topics)
        if args.list:
            for name in names:
                print(name)
            return
        for name in names:
            t = md.topics[name]
            if t.error is not None:
                die(tool, f"topic '{name}': {t.error.name()}: {t.error.str()}", 1)
            print(f"Topic: {name}\tPartitionCount: {len(t.partitions)}")
            for pid in sorted(t.partitions):
                part = t.partitions[pid]
                print(
                    f"\tTopic: {name}\tPartition: {pid}\tLeader: {part.leader}\t"
                    f"Replicas: {','.join(map(str, part.replicas))}\tIsr: {','.join(map(str, part.isrs))}"
                )


# ---------------------------------------------------------------------------------------------
# kafka-acls.sh


def acls_main(argv):
    tool = "kafka-acls.sh"
    p = Parser(prog=tool, add_help=False)
    p.add_argument("--bootstrap-server", required=True)
    action = p.add_mutually_exclusive_group(required=True)
    for a in ("add", "remove", "list"):
        action.add_argument(f"--{a}", action="store_true")
    p.add_argument("--allow-principal", action="append", default=[])
    p.add_argument("--deny-principal", action="append", default=[])
    p.add_argument("--allow-host", action="append", default=[])
    p.add_argument("--deny-host", action="append", default=[])
    p.add_argument("--operation", action="append", default=[])
    res = p.add_mutually_exclusive_group()
    res.add_argument("--topic")
    res.add_argument("--group")
    res.add_argument("--cluster", action="store_true")
    p.add_argument("--force", action="store_true")

    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    try:
        args = p.parse_args(argv)
        if args.topic is not None:
            rtype, rname = ResourceType.TOPIC, args.topic
        elif args.group is not None:
            rtype, rname = ResourceType.GROUP, args.group
        elif args.cluster:
            rtype, rname = ResourceType.BROKER, "kafka-cluster"
        else:
            rtype, rname = None, None
        ops = []
        for op in args.operation:
            key = op.strip().upper().replace("-", "_")
            if key == "IDEMPOTENTWRITE":
                key = "IDEMPOTENT_WRITE"
            if key not in AclOperation.__members__ or key in ("UNKNOWN", "ANY"):
                raise Refused(f"unknown --operation '{op}'")
            ops.append(AclOperation[key])
        if args.add or args.remove:
            if rtype is None:
                raise Refused("--add and --remove need one of --topic, --group, --cluster")
            if not ops:
                raise Refused("--add and --remove need --operation")
            if not (args.allow_principal or args.deny_principal):
                raise Refused("--add and --remove need --allow-principal or --deny-principal")
        elif args.operation or args.allow_principal or args.deny_principal or args.allow_host or args.deny_host:
            raise Refused("--list supports only a resource filter")
    except Refused as exc:
        die(tool, f"unsupported invocation: {exc} (args: {' '.join(argv)})", 2)

    a = admin(args.bootstrap_server)
    if args.list:
        flt = AclBindingFilter(
            rtype if rtype is not None else ResourceType.ANY,
            rname,
            ResourcePatternType.ANY if rtype is None else ResourcePatternType.LITERAL,
            None,
            None,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        try:
            bindings = a.describe_acls(flt, request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
        except Exception as exc:
            die(tool, f"DescribeAcls failed: {describe_exc(exc)}", 1)
        for b in bindings:
            print(
                f"{b.restype.name}:{b.name} ({b.resource_pattern_type.name}) "
                f"principal={b.principal} host={b.host} operation={b.operation.name} "
                f"permission={b.permission_type.name}"
            )
        return

    bindings = []
    for perm, principals, hosts in (
        (AclPermissionType.ALLOW, args.allow_principal, args.allow_host),
        (AclPermissionType.DENY, args.deny_principal, args.deny_host),
    ):
        for principal in principals:
            for host in hosts or ["*"]:
                for op in ops:
                    bindings.append((perm, principal, host, op))
    if args.add:
        objs = [AclBinding(rtype, rname, ResourcePatternType.LITERAL, pr, h, op, perm) for perm, pr, h, op in bindings]
        errors = wait_all(a.create_acls(objs, request_timeout=TIMEOUT_S))
        if errors:
            die(tool, "CreateAcls failed: " + "; ".join(errors), 1)
        print(f"Added {len(objs)} ACL(s) for resource {rtype.name}:{rname}")
    else:
        objs = [
            AclBindingFilter(rtype, rname, ResourcePatternType.LITERAL, pr, h, op, perm) for perm, pr, h, op in bindings
        ]
        errors = wait_all(a.delete_acls(objs, request_timeout=TIMEOUT_S))
        if errors:
            die(tool, "DeleteAcls failed: " + "; ".join(errors), 1)
        print(f"Removed ACL(s) for resource {rtype.name}:{rname}")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("topics", "acls"):
        die("kafka_admin.py", "usage: kafka_admin.py topics|acls ARGS...", 2)
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        die(f"kafka-{sys.argv[1]}.sh", "python module confluent_kafka missing; run tests/compat/install-deps.sh", 2)
    (topics_main if sys.argv[1] == "topics" else acls_main)(sys.argv[2:])


if __name__ == "__main__":
    main()
