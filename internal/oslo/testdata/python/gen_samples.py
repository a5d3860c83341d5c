"""Regenerate samples.json: message bodies produced by the real Zed
oslo.messaging serialisation helpers (run with /usr/bin/python3).

Each sample has "kind" (request, reply, notification), "body" (the exact
AMQP body text) and "inner" (the decoded inner message, failure strings
left as strings). The values exercise what the capture files do not:
non-ASCII text (jsonutils writes \\uXXXX escapes), big integers, floats,
nested containers, and a failure raised with a non-ASCII message.
"""
import json
import sys
import uuid

from oslo_messaging._drivers import common
from oslo_serialization import jsonutils

ARGS = {
    "text": "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e \U0001F600 <b>&amp;</b> \u2028",
    "big": 12345678901234567890123,
    "neg": -42,
    "float": 3.25,
    "exp": 1e-07,
    "flag": True,
    "nothing": None,
    "nested": {"list": [1, "two", [3.0, {"four": False}]], "empty": {}},
}
CTX = {"user_id": "u-\u00e9", "roles": ["admin", "r\u00f4le"], "is_admin": False,
       "request_id": "req-" + "0" * 8, "quota": 10 ** 20}


def ctx_keys(d):
    return {"_context_" + k: v for k, v in d.items()}


def sample(name, kind, inner):
    body = jsonutils.dumps(common.serialize_msg(inner))
    return {"name": name, "kind": kind, "body": body, "inner": inner}


def main():
    samples = []
    call = {"method": "echo", "args": ARGS, "version": "1.1",
            "namespace": "trustpool", "_msg_id": uuid.UUID(int=1).hex,
            "_reply_q": "reply_" + uuid.UUID(int=2).hex, "_timeout": None,
            "_unique_id": uuid.UUID(int=3).hex}
    call.update(ctx_keys(CTX))
    samples.append(sample("call_nonascii", "request", call))

    reply = {"result": ARGS, "failure": None, "ending": True,
             "_msg_id": uuid.UUID(int=1).hex, "_unique_id": uuid.UUID(int=4).hex}
    samples.append(sample("reply_nonascii", "reply", reply))

    try:
        raise ValueError("mauvaise valeur \u00e9\u2713")
    except ValueError:
        failure = common.serialize_remote_exception(sys.exc_info())
    reply = {"result": None, "failure": failure, "ending": True,
             "_msg_id": uuid.UUID(int=1).hex, "_unique_id": uuid.UUID(int=5).hex}
    samples.append(sample("reply_failure_nonascii", "reply", reply))

    notif = {"message_id": str(uuid.UUID(int=6)), "publisher_id": "trustpool:h\u00f4st",
             "event_type": "trustpool.host.attested", "priority": "WARN",
             "payload": ARGS, "timestamp": "2026-11-25 19:47:24",
             "_unique_id": uuid.UUID(int=7).hex}
    notif.update(ctx_keys(CTX))
    samples.append(sample("notification_nonascii", "notification", notif))

    json.dump(samples, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
