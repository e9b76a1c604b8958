from __future__ import annotations

from celery import shared_task

from saas import exports


@shared_task(name="saas.ping", ignore_result=False)
def ping() -> str:
    """Answers 'pong': health checks and the broker round-trip benchmark use it."""
    return "pong"


@shared_task(name=exports.BUILD_EXPORT_TASK, ignore_result=True, acks_late=True)
def build_export(export_id: str) -> None:
    """Build a data export's archive (sent to the maintenance queue). A duplicate or late delivery
    claims nothing and stops; a delivery after its worker died takes the build over."""
    exports.export_build(export_id=export_id)
