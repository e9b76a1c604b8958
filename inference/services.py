from __future__ import annotations

from django.utils import timezone

from inference.models import Worker


def worker_heartbeat(*, name: str, hostname: str, pid: int, queues: list[str]) -> Worker:
    now = timezone.now()
    worker, _ = Worker.objects.update_or_create(
        name=name,
        defaults={"hostname": hostname, "pid": pid, "queues": queues, "last_heartbeat_at": now},
        create_defaults={
            "hostname": hostname,
            "pid": pid,
            "queues": queues,
            "started_at": now,
            "last_heartbeat_at": now,
        },
    )
    return worker


def worker_stop(*, name: str) -> None:
    Worker.objects.filter(name=name).delete()
