"""``jobchain http push`` and ``pull``: a file through a line queue, byte for byte and in order.

Push (:mod:`jobchain_http._push`) streams its input into messages of whole
lines keyed by the push's id and their byte range, so a push run again with the
same ``push_id`` stores nothing twice. Pull (:mod:`jobchain_http._pull`) writes
them to a file in order, each byte once, acknowledging only what is fsynced,
and resumes where a killed pull stopped.
"""

from __future__ import annotations

from jobchain_http._lineio import (
    PUSH_ID,
    QueueNotFoundError,
    TargetExistsError,
    TransferError,
    cut_messages,
    message_key,
    parse_key,
    split_lines,
)
from jobchain_http._pull import Existing, PullReport, pull
from jobchain_http._push import NotTextError, PushReport, push

__all__ = [
    "PUSH_ID",
    "Existing",
    "NotTextError",
    "PullReport",
    "PushReport",
    "QueueNotFoundError",
    "TargetExistsError",
    "TransferError",
    "cut_messages",
    "message_key",
    "parse_key",
    "pull",
    "push",
    "split_lines",
]
