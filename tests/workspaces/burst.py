"""Submit jobs in one workspace as several of its members, from many threads of this process at
once; print what happened as JSON: {user id: [outcome, ...]} (an outcome is "accepted" or the
refusal's code).

Run by tests in several processes at once:
    python -m tests.workspaces.burst WORKSPACE_ID THREADS SUBMITS_PER_THREAD USER_ID [USER_ID ...]
Each process runs THREADS threads per member, each submitting SUBMITS_PER_THREAD jobs in a row.
"""

from __future__ import annotations

import json
import os
import sys
import threading

PROMPT = "The lighthouse keeper"
MAX_NEW_TOKENS = 20


def main(workspace_id: int, threads: int, per_thread: int, user_ids: list[int]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
    import django

    django.setup()
    from django.db import close_old_connections

    from accounts.models import Membership
    from core.errors import ApplicationError
    from inference.services import job_submit

    outcomes: dict[int, list[str]] = {user_id: [] for user_id in user_ids}
    lock = threading.Lock()
    start = threading.Barrier(threads * len(user_ids))

    def submit(user_id: int) -> None:
        try:
            member = Membership.objects.select_related("workspace", "user").get(
                workspace_id=workspace_id, user_id=user_id
            )
            start.wait()
            for _ in range(per_thread):
                try:
                    job_submit(member=member, prompt=PROMPT, max_new_tokens=MAX_NEW_TOKENS)
                    outcome = "accepted"
                except ApplicationError as error:
                    outcome = error.code
                with lock:
                    outcomes[user_id].append(outcome)
        finally:
            close_old_connections()

    running = [threading.Thread(target=submit, args=(user_id,)) for user_id in user_ids for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    print(json.dumps({str(user_id): found for user_id, found in outcomes.items()}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), [int(arg) for arg in sys.argv[4:]])
