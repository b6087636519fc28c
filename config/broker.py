"""What the broker holds, read from kombu's Redis layout: the one place that
knows it. Used by the beat sweep that sends again the messages a broker lost
(annotate/training/recovery.py)."""
import logging

from config.celery import app

log = logging.getLogger(__name__)


def broker_holds_message(*, task_id: str, queue: str) -> bool | None:
    """Whether the broker still holds this message: waiting in the queue, or
    delivered to a worker and not yet acknowledged. None when it cannot tell
    (a broker other than Redis, or Redis unreachable): then nothing is sent
    again on its account. Reads kombu's Redis layout: a list per queue (and
    per priority step) and the `unacked` hash of delivered messages."""
    try:
        with app.connection_for_read() as conn:
            if conn.transport.driver_type != "redis":
                return None
            channel = conn.default_channel
            client = channel.client
            for key in {channel._q_for_pri(queue, pri) for pri in channel.priority_steps}:
                if any(task_id in raw.decode(errors="replace") for raw in client.lrange(key, 0, -1)):
                    return True
            return any(task_id in raw.decode(errors="replace") for raw in client.hvals(channel.unacked_key))
    except Exception as exc:  # redis.ConnectionError, kombu's OperationalError
        log.warning("could not ask the broker about message %s (%s: %s)", task_id, type(exc).__name__, exc)
        return None
