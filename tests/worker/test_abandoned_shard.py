"""A shard delivered to a worker that died comes back on the first sweep past its timeout.

kombu's Redis transport keeps a delivered, unacknowledged message in its unacked set; a live
worker's periodic sweep puts it back on the queue once it is older than the visibility
timeout. The sweeps here are the calls a worker's event loop makes, with the app's own
transport options.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import redis

from evalq.broker import make_app
from evalq.config import Settings

VISIBILITY_S = 2
_CONSUME_AND_DIE = """
import json, os, sys
from kombu import Connection
with Connection(sys.argv[1], transport_options=json.loads(sys.argv[3])) as conn:
    message = conn.SimpleQueue(sys.argv[2]).get(timeout=5)
    print(json.dumps(message.payload), flush=True)
    os._exit(0)
"""


def test_an_abandoned_message_is_back_on_the_first_sweep_after_its_timeout(
    redis_url: str,
) -> None:
    app = make_app(Settings(broker_url=redis_url, visibility_timeout_s=VISIBILITY_S))
    options = app.conf.broker_transport_options
    queue = "evalq.abandoned"

    with app.connection_for_write() as producer:
        producer.SimpleQueue(queue).put({"shard": 1})
    # Delivered to a consumer that then dies without acknowledging: a SIGKILLed worker
    # (a clean close would put the message back at once).
    dead = subprocess.run(
        [sys.executable, "-c", _CONSUME_AND_DIE, redis_url, queue, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dead.stdout.strip() == '{"shard": 1}', dead.stderr

    with app.connection_for_read() as live:
        simple = live.SimpleQueue(queue)
        # A worker starting: its first polls find the queue empty and sweep, while the
        # message is still within its timeout, so nothing comes back yet.
        with pytest.raises(simple.Empty):
            simple.get(timeout=0.5)
        time.sleep(VISIBILITY_S + 0.5)
        # The worker's timer's next sweep finds it old enough and puts it back.
        live.transport.cycle.maybe_restore_messages()
        assert redis.Redis.from_url(redis_url).llen(queue) == 1
        back = simple.get(timeout=5)
        assert back.payload == {"shard": 1}
        back.ack()


def test_sweeps_are_at_most_half_a_timeout_apart_and_every_one_scans() -> None:
    options = make_app(Settings(visibility_timeout_s=6 * 3600)).conf.broker_transport_options
    assert options["unacked_restore_throttle"] == 1
    assert options["unacked_restore_interval"] <= 10
    short = make_app(Settings(visibility_timeout_s=4)).conf.broker_transport_options
    assert short["unacked_restore_interval"] <= 2
