"""Decode message bodies written by the Go encoders with the real Zed
oslo.messaging helpers. Used by TestPythonAgrees (run with /usr/bin/python3).

stdin: {"messages": [{"kind": ..., "body": ...}], "versions": [[endpoint, requested], ...]}
stdout: {"messages": [...], "versions": [...]}, one result per input.
"""
import json
import sys

from oslo_messaging._drivers import amqp
from oslo_messaging._drivers import common
from oslo_messaging import _utils


def check(kind, body):
    msg = common.deserialize_msg(json.loads(body))
    out = {"inner": dict(msg)}
    if kind == "request":
        ctxt = amqp.unpack_context(msg)
        out["context"] = ctxt.to_dict()
        out["remaining"] = sorted(msg)
    elif kind == "reply" and msg.get("failure"):
        exc = common.deserialize_remote_exception(msg["failure"], ["nova.exception"])
        out["exception"] = {
            "type": type(exc).__module__ + "." + type(exc).__name__,
            "str_first_line": str(exc).split("\n")[0],
            "is_value_error": isinstance(exc, ValueError),
            "kwargs": getattr(exc, "kwargs", None),
        }
    return out


def compatible(endpoint, requested):
    try:
        return bool(_utils.version_is_compatible(endpoint or None, requested))
    except (ValueError, IndexError, AttributeError):
        return False


def main():
    data = json.load(sys.stdin)
    result = {
        "messages": [check(m["kind"], m["body"]) for m in data["messages"]],
        "versions": [compatible(e, r) for e, r in data["versions"]],
    }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
