"""Kombu's Redis transport, with one fault made recoverable.

When the broker connection drops while a job runs, kombu closes the channel the job's message
came from. The job then finishes (acks are late) and its ack goes to that closed channel, which
has no connection left: stock kombu raises AttributeError there, which Celery treats as
unrecoverable, and the whole worker exits mid-batch. Here the closed channel raises Redis's
ConnectionError instead, one of the errors Celery expects from an ack: it logs "Couldn't ack"
and carries on. Nothing is lost by not acking: the job's row is already final, and a message
redelivered later claims nothing.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("this broker channel was closed when its connection was lost")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
